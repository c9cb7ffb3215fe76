"""Quality measures: dataset-level dimensions, score and grade; cell-level rules."""
