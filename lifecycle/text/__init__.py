"""Text machinery shared by the stages: personal data, character n-grams, MinHash."""
