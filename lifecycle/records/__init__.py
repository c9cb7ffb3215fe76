"""Stage outputs in object storage: Parquet shards, manifests, the columns Granary adds."""
