"""Evaluation: splits, Great Expectations, quality dimensions, the grade and the gate."""
