"""TensorFlow's import in the trainer process, without its start-up lines unless asked for."""

from __future__ import annotations

import os
import re
import sys
import tempfile
from types import ModuleType

# TensorFlow's C++ log level: the serving process sets 0 when it logs at DEBUG, else 2.
LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
# TensorFlow 2.21 writes these while it loads, before it reads LEVEL_ENV (tensorflow#100442):
# on a machine without a GPU they say only that, and that oneDNN is on.
START_LINES = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called"
    r"|I\d{4} "  # an INFO line
    r"|E\d{4} .*failed call to cuInit"  # no GPU driver
    r"|To enable the following instructions:"  # the CPU feature line's second half
)


def _quiet() -> bool:
    try:
        return int(os.environ.get(LEVEL_ENV, "0")) >= 1
    except ValueError:
        return False


def import_keras() -> ModuleType:
    """Import keras (and so TensorFlow) and list the devices (when TensorFlow looks for CUDA).
    Unless LEVEL_ENV is 0, what that writes to stderr is held back, and only the lines that
    are not START_LINES reach the log: a warning or an error of another kind still does."""
    if not _quiet():
        return _load()
    sys.stderr.flush()
    with tempfile.TemporaryFile() as held:
        saved = os.dup(2)
        os.dup2(held.fileno(), 2)  # the C++ logs write to the descriptor, not to sys.stderr
        try:
            return _load()
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            for line in held.read().decode(errors="replace").splitlines(keepends=True):
                if not START_LINES.match(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def _load() -> ModuleType:
    import keras
    import tensorflow as tf

    tf.config.list_physical_devices()
    return keras
