"""Label machinery shared by the stages: labellers, agreement, confident-learning checks."""
