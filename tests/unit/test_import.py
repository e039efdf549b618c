"""Importing the client SDK does not drag in TensorFlow, Keras, or the `data` extra's pyarrow
and pandas (loaded only when a file is read)."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json, sys
import movie_embeddings
from movie_embeddings import Client, ModelInfo, Watcher, errors, types, _convert, client
from movie_embeddings import datasets
print(json.dumps(sorted(sys.modules)))
"""
_HEAVY = {"tensorflow", "keras", "tf_keras", "jax", "torch", "pyarrow", "pandas"}


def test_client_import_leaves_tensorflow_keras_pyarrow_and_pandas_out() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "movie_embeddings" in modules  # the probe really imported the SDK
    assert "movie_embeddings.v1.movie_embeddings_pb2" in modules
    assert sorted(m for m in modules if m.split(".")[0] in _HEAVY) == []
    assert not any(m.startswith("movie_embeddings_server") for m in modules)
