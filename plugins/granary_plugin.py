"""Mounts the Granary web app into Airflow 3's API server under /granary and links it from the
Airflow navigation. The app itself lives in granary/webapp.py."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from granary.webapp import create_app


class GranaryPlugin(AirflowPlugin):
    name = "granary"
    fastapi_apps = [{"app": create_app(), "url_prefix": "/granary", "name": "Granary"}]
    external_views = [{"name": "Granary", "href": "/granary/", "destination": "nav",
                       "url_route": "granary"}]
