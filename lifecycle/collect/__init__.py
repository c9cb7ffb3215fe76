"""Collection: every source fetched, landed unchanged in the raw bucket, parsed into records."""
