"""Image machinery shared by the stages: probing, decoding, hashing."""
