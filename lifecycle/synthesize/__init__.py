"""Synthesis (合成): marked, explained, checked and capped synthetic records."""
