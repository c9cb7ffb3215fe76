"""Publishing: the version's files, the registry tag, the releases bucket and the catalog."""
