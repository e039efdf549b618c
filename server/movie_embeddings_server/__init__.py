"""The movie-embeddings server, a package per process: serving/ (gRPC, numpy), training/
(TensorFlow), store/ (on disk), model/ (a version as arrays), cli/ (the command)."""
