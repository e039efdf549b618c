"""A stopped server restarted on its data dir serves the same models, bit for bit, untrained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import start_server

import movie_embeddings as me

EMPTY_STORE = "empty model store"


def snapshot(
    client: me.Client,
) -> tuple[list[me.ModelInfo], dict[tuple[str, int], np.ndarray], np.ndarray]:
    """Every version's description and full vector matrix, and one reconstruction."""
    models = client.list_models()
    matrices = {}
    for info in models:
        ids, matrix = client.movie_vectors(model=info.ref)
        assert ids.tolist() == list(range(info.num_movies))
        matrices[(info.name, info.version)] = matrix
    probabilities = client.reconstruct(
        [1, 2, 3], age_years=27, education=2, model=me.ModelRef("second", 1)
    ).probabilities
    return models, matrices, probabilities


def test_restart_serves_identical_models_without_retraining(tmp_path: Path) -> None:
    # A log file per start: start_server() reads the port from the log's last "listening on"
    # line, which in an appended log could be the previous process's.
    data, log, restart_log_file = (
        tmp_path / "data",
        tmp_path / "first.log",
        tmp_path / "restart.log",
    )

    first = start_server(data, log)
    try:
        with me.Client(first.target) as client:
            events = list(client.train("second", num_watchers=200, epochs=2, seed=1))
            assert isinstance(events[-1], me.ModelInfo)
            assert events[-1].ref == me.ModelRef("second", 1)
            models, matrices, probabilities = snapshot(client)
    finally:
        first_code = first.stop()
    assert first_code == 0, first.log_text()
    first_log = log.read_text(errors="replace")
    assert first_log.count(EMPTY_STORE) == 1, first_log
    assert "loaded 0 model version(s)" in first_log
    assert [(m.name, m.version) for m in models] == [("default", 1), ("second", 1)]

    second = start_server(data, restart_log_file)
    try:
        restart_log = second.log_text()
        assert "loaded 2 model version(s)" in restart_log, restart_log
        assert EMPTY_STORE not in restart_log, restart_log
        assert "epoch" not in restart_log, restart_log  # no training of any kind
        with me.Client(second.target) as client:
            models_again, matrices_again, probabilities_again = snapshot(client)
    finally:
        second_code = second.stop()
    assert second_code == 0, second.log_text()
    assert log.read_text(errors="replace") == first_log

    # Names, versions, create times, configs and metrics, exactly.
    assert [(m.name, m.version, m.create_time) for m in models_again] == [
        (m.name, m.version, m.create_time) for m in models
    ]
    assert [dict(m.metrics) for m in models_again] == [dict(m.metrics) for m in models]
    assert models_again == models
    assert matrices_again.keys() == matrices.keys()
    for key, matrix in matrices.items():
        assert matrices_again[key].dtype == matrix.dtype == np.float32
        assert matrices_again[key].tobytes() == matrix.tobytes(), key
    assert probabilities_again.tobytes() == probabilities.tobytes()
    # The two models really are different, so the comparison above could tell them apart.
    assert not np.array_equal(matrices[("default", 1)], matrices[("second", 1)])

    print(
        f"\nserver start to SERVING: empty store (trains default) {first.start_seconds:.2f} s, "
        f"restart on the stored models {second.start_seconds:.2f} s"
    )
