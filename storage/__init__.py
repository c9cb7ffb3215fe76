"""Object store, key layout, DVC registry and catalog database."""
