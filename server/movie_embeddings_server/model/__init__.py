"""A trained version as numpy arrays, read by every process: forward pass, search, catalogue."""
