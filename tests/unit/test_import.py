"""Importing the client SDK does not drag in TensorFlow or Keras."""

from __future__ import annotations

import json
import subprocess
import sys

_PROBE = """
import json, sys
import movie_embeddings
from movie_embeddings import Client, ModelInfo, Watcher, errors, types, _convert, client
print(json.dumps(sorted(sys.modules)))
"""


def test_client_import_leaves_tensorflow_and_keras_out() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    modules = set(json.loads(done.stdout.strip().splitlines()[-1]))
    assert "movie_embeddings" in modules  # the probe really imported the SDK
    assert "movie_embeddings.v1.movie_embeddings_pb2" in modules
    heavy = sorted(
        m for m in modules if m.split(".")[0] in {"tensorflow", "keras", "tf_keras", "jax", "torch"}
    )
    assert heavy == []
    assert not any(m.startswith("movie_embeddings_server") for m in modules)
