"""The Granary web app's routers, one module per area, assembled by granary.webapp.create_app:

- ``context``: what every router shares (settings, the lineage store and its catalog, the
  datasets a request may not see, the app's base path) and the run reports read from S3;
- ``catalog``: the catalog's pages and search (the catalog, a dataset, a version, the lineage
  graph) and the value curve as JSON;
- ``reports``: a run's quality, cleaning, annotation and synthesis reports (pages and JSON),
  its Data Docs and its Label Studio files;
- ``assets``: the health check, the lineage page's script and the facet schemas.
"""
