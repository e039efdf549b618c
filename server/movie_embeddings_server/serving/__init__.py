"""The serving process: gRPC server, servicer, queries from numpy; never imports TensorFlow."""
