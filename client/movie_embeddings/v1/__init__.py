"""Generated code of the movie_embeddings.v1 contract (scripts/generate_protos.py)."""
