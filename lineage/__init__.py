"""OpenLineage naming (and, with the lineage issue, emission and the lineage store)."""
