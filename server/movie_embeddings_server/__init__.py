"""The movie-embeddings server: generator, Keras model, model store, search and gRPC service."""
