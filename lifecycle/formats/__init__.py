"""Parsing landed bytes into records: one reader per format, physical lines and dialects."""
