"""The download engine: ranged reads in parallel, hashed in order, resumable."""
