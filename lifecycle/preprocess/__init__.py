"""Preprocessing (清洗): the spec's operators per shard, the global deduplication, and the merge."""
