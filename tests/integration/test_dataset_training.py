"""Training on a stored dataset: rows to a staged version (catalogue, metadata, held-out
watchers), progress inside epochs, stop, memory, and the Train RPC's dataset branch."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc
from movie_embeddings_server import config
from movie_embeddings_server.errors import Cancelled
from movie_embeddings_server.model import search
from movie_embeddings_server.model.catalogue import Catalogue
from movie_embeddings_server.serving import trainer
from movie_embeddings_server.serving.app import ServerConfig, create_server
from movie_embeddings_server.store.datasets import DatasetBuilder, DatasetStore, StoredDataset
from movie_embeddings_server.store.models import Store
from movie_embeddings_server.training import keras_model as training
from movie_embeddings_server.training import rows, worker

GROUPS = 5
# The Keras trainer's mechanics (stops inside a TensorFlow call, its validation pass) are
# tested here; the sampled trainer (the dataset default's above config.DENSE_CELLS) in
# tests/unit/test_sampled.py.
SMALL = config.resolve_training(
    {
        **{"epochs": 3, "embedding_dim": 8, "hidden_units": 32, "learning_rate": 0.02},
        **{"batch_size": 32, "validation_fraction": 0.1, "trainer": "keras"},
    },
    source="dataset",
)


def taste_dataset(
    name: str, num_watchers: int, num_movies: int, per_watcher: int, seed: int = 0
) -> StoredDataset:
    """Watchers of GROUPS latent tastes: 70 % of their ratings go to movies of their group
    (movie m is in group m % GROUPS), rated 5; other movies get 1-3 stars. Movie ids are
    10 m + 1 and watcher ids 3 w + 7 (not row numbers); ages follow the group."""
    rng = np.random.default_rng(seed)
    group = rng.integers(0, GROUPS, num_watchers)
    shape = (num_watchers, per_watcher)
    own = group[:, None] + GROUPS * rng.integers(0, num_movies // GROUPS, shape)
    movies = np.where(rng.random(shape) < 0.7, own, rng.integers(0, num_movies, shape))
    stars = np.where(movies % GROUPS == group[:, None], 5.0, rng.integers(1, 4, shape))
    watcher_ids = np.arange(num_watchers) * 3 + 7
    builder = DatasetBuilder(name, "latent tastes", max_ratings=10**9)
    builder.add_ratings(
        0, np.repeat(watcher_ids, per_watcher), movies.ravel() * 10 + 1, stars.ravel()
    )
    builder.add_watchers(1, watcher_ids, 20.0 + 5 * group + rng.integers(0, 5, num_watchers))
    titles = [f"Movie {m}" for m in range(num_movies)]
    builder.add_movies(2, np.arange(num_movies) * 10 + 1, titles, ["Drama|Comedy"] * num_movies)
    return builder.build()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding `tastes` v1: 300 watchers x 200 movies, 40 ratings each."""
    root = tmp_path_factory.mktemp("data")
    DatasetStore(root).save(taste_dataset("tastes", 300, 200, 40))
    return root


def _source(**given: Any) -> config.DatasetTrainingSpec:
    return config.resolve_dataset_training({"dataset": {"name": "tastes", "version": 1}, **given})


@pytest.fixture(scope="module")
def trained(data_dir: Path) -> tuple[Path, list[training.Epoch], config.DatasetTrainingSpec]:
    """One training with a progress event after every step (one step per TensorFlow call)."""
    events: list[training.Epoch] = []
    source = _source(seed=3)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "PROGRESS_SECONDS", 0.0)
        patch.setattr(training, "EXECUTION_WORK", 1)
        staged = worker.run_dataset(
            Store(data_dir),
            DatasetStore(data_dir),
            "tastes-model",
            source,
            SMALL,
            events.append,
            training.StopSignal(),
        )
    return staged, events, source


def test_progress_comes_inside_each_epoch_with_step_and_steps(trained: Any) -> None:
    staged, events, _ = trained
    steps = events[0].steps
    assert steps > 1
    assert all(e.steps == steps for e in events)
    for epoch in range(1, SMALL.epochs + 1):
        within = [e for e in events if e.epoch == epoch]
        assert [e.step for e in within] == list(range(1, steps + 1))
        assert all(math.isnan(e.val_loss) for e in within[:-1])
        assert math.isfinite(within[-1].val_loss)  # SMALL's validation split
    meta = json.loads((staged / "metadata.json").read_text())
    assert [h["step"] for h in meta["history"]] == [steps] * SMALL.epochs  # epoch ends only


def test_progress_carries_the_seconds_left(trained: Any) -> None:
    _, events, _ = trained
    inside = [e for e in events if e.step < e.steps]
    ends = [e for e in events if e.step == e.steps]
    assert inside and ends
    # Inside an epoch: its rest at the pace so far, and the run's to the epoch limit beyond it.
    for e in inside:
        assert e.epoch_seconds_left > 0
        assert e.run_seconds_left >= e.epoch_seconds_left
    # At an epoch's end: none left in it; the epochs to come at the mean epoch time so far.
    for e in ends:
        assert e.epoch_seconds_left == 0
        expected = (e.epochs - e.epoch) * e.elapsed_seconds / e.epoch
        assert e.run_seconds_left == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert ends[-1].run_seconds_left == 0 or ends[-1].epoch < ends[-1].epochs


def test_it_learns_the_tastes(trained: Any) -> None:
    staged, events, _ = trained
    ends = [e for e in events if e.step == e.steps]
    assert ends[-1].loss < ends[0].loss
    with np.load(staged / "weights.npz") as weights:
        unit = search.unit_rows(weights["embedding"])
    groups = (Catalogue.load(staged, len(unit)).movie_ids - 1) // 10 % GROUPS
    purity = np.mean(
        [
            np.mean(groups[search.top_k(unit @ unit[m], 10, np.array([m]))] == groups[m])
            for m in range(len(unit))
        ]
    )
    assert purity > 0.5  # chance: 0.2


def test_the_version_holds_the_catalogue_metadata_and_held_out_watchers(
    trained: Any, data_dir: Path
) -> None:
    staged, _, source = trained
    meta = json.loads((staged / "metadata.json").read_text())
    info = DatasetStore(data_dir).load("tastes", 1).info
    assert meta["dataset"] == dataclasses.asdict(source)
    assert meta["dataset"]["dataset"] == {"name": "tastes", "version": 1}
    assert meta["dataset_info"] == info
    assert "synthetic" not in meta
    assert (meta["has_age"], meta["has_education"]) == (True, False)
    assert meta["num_train_watchers"] + meta["num_heldout_watchers"] <= 300
    assert meta["num_heldout_watchers"] == int(
        0.1 * (meta["num_train_watchers"] + meta["num_heldout_watchers"])
    )
    assert {"loss", "val_loss", "epochs_run", "train_seconds"} <= set(meta["metrics"])
    assert meta["training"] == config.wire_training(SMALL)
    assert meta["trainer"] == config.local_training(SMALL)
    with np.load(staged / "weights.npz") as weights:
        catalogue = Catalogue.load(staged, len(weights["embedding"]))
    assert set(catalogue.movie_ids.tolist()) <= {10 * m + 1 for m in range(200)}
    row = catalogue.row("movie_id", 11)
    assert catalogue.title(row) == "Movie 1"
    assert catalogue.genre_list(row) == ["Drama", "Comedy"]
    assert catalogue.num_likes.sum() > 0
    with np.load(staged / "heldout.npz") as held:
        ids = held["watcher_ids"]
        assert len(ids) == meta["num_heldout_watchers"]
        assert set(ids.tolist()) <= {3 * w + 7 for w in range(300)}
        assert held["indptr"][-1] == len(held["columns"]) > 0
        assert held["columns"].max() < len(catalogue)


def _run(
    data_dir: Path,
    name: str,
    spec: config.TrainSpec,
    on_epoch: Any,
    stop: training.StopSignal,
) -> Path:
    """worker.run_dataset on `tastes` with seed 1; `on_epoch` None ignores the events."""
    return worker.run_dataset(
        Store(data_dir),
        DatasetStore(data_dir),
        name,
        _source(seed=1),
        spec,
        on_epoch or (lambda event: None),
        stop,
    )


def test_a_stop_inside_an_epoch_cancels_and_stages_nothing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "PROGRESS_SECONDS", 0.0)
    monkeypatch.setattr(training, "EXECUTION_WORK", 1)
    stop = training.StopSignal()
    seen: list[training.Epoch] = []

    def on_epoch(event: training.Epoch) -> None:
        seen.append(event)
        stop.set()

    with pytest.raises(Cancelled):
        _run(data_dir, "stopped", dataclasses.replace(SMALL, epochs=50), on_epoch, stop)
    assert len(seen) <= 2 and seen[0].step < seen[0].steps  # stopped within a step or two
    assert not (data_dir / "stopped").exists() or not list((data_dir / "stopped").iterdir())


def test_early_stopping_keeps_the_epoch_of_the_best_validation_ndcg(data_dir: Path) -> None:
    spec = dataclasses.replace(
        SMALL, epochs=30, validation_fraction=0.2, early_stopping_patience=3, learning_rate=0.05
    )
    prepared = rows.prepare(DatasetStore(data_dir).load("tastes", 1), _source(seed=5))
    trained = training.train_sparse(prepared, spec, seed=5)
    assert trained.best_epoch < len(trained.history) <= 30  # stopped early, then restored
    assert len(trained.history) - trained.best_epoch == 3
    # Measured again on the restored weights: the kept epoch's figure.
    _, validation = prepared.validation_split(spec.validation_fraction, 5)
    assert validation is not None
    again = training.validation_ranking(validation, 5)
    again.set_model(trained.model)
    trained.model.stop_training = False  # as EarlyStopping left it: the next fit resets it
    logs: dict[str, float] = {}
    again.on_epoch_end(0, logs)
    assert trained.val_ndcg_at_100 == pytest.approx(logs["val_ndcg_at_100"], abs=1e-6)
    assert 0 < logs["val_ndcg_at_100"] <= 1


class _StopInValidation(training.StopSignal):
    """Set as the first validation pass begins (its second attach: fit's, then evaluate's),
    counting the TensorFlow calls that pass makes from then on."""

    attached = 0
    validation_calls = 0

    def attach(self, model: Any) -> None:
        self.attached += 1
        if self.attached == 2:
            run = model.test_function

            def counted(iterator: Any) -> Any:
                self.validation_calls += 1
                return run(iterator)

            model.test_function = counted
            self.set()
        super().attach(model)


def test_a_stop_in_the_validation_pass_ends_it_within_one_tensorflow_call(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(training, "EXECUTION_WORK", 1)  # a step a call: ~6 validation calls
    stop = _StopInValidation()
    with pytest.raises(Cancelled):
        _run(data_dir, "stopped-validating", dataclasses.replace(SMALL, batch_size=4), None, stop)
    assert stop.attached == 2 and stop.validation_calls == 1


def _peak_rss(pid: int) -> int:
    """The most resident memory a process has had (bytes): its VmHWM, ru_maxrss to itself."""
    found = re.search(r"VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
    assert found
    return int(found.group(1)) * 1024


def test_the_trainer_never_builds_a_dense_matrix_of_the_whole_dataset(tmp_path: Path) -> None:
    # ~200,000 ratings over 20,000 movies by 50,000 watchers: ~4 GB as a dense float32 matrix.
    # An epoch of it takes minutes (the output layer is dense); the trainer's memory has
    # settled after a few TensorFlow calls, the second progress event inside the first epoch.
    DatasetStore(tmp_path).save(taste_dataset("wide", 50_000, 20_000, 4, seed=1))
    source = _source(dataset={"name": "wide", "version": 1}, min_likes_per_watcher=1, seed=0)
    spec = config.resolve_training(
        {"embedding_dim": 4, "hidden_units": 8, "epochs": 1, "batch_size": 64, "trainer": "keras"},
        source="dataset",
    )
    runner = trainer.Trainer(Store(tmp_path))
    try:
        job = runner.start("wide", source, spec)
        events = iter(job)
        first, second = next(events), next(events)
        assert first.step < second.step < second.steps
        peak = _peak_rss(job.pid)
        job.cancel()
        with pytest.raises(Cancelled):
            list(events)
    finally:
        runner.close()
    dense = 50_000 * 20_000 * 4
    assert peak < dense / 3, f"trainer peak RSS {peak / 2**20:.0f} MiB"


# --- the Train RPC ------------------------------------------------------------------------

MAX_DATASET_RATINGS = 10_000


@pytest.fixture(scope="module")
def stub(data_dir: Path) -> Iterator[pb_grpc.MovieEmbeddingServiceStub]:
    """A server on the data dir, its ratings cap between the sizes of `tastes` and `big`."""
    DatasetStore(data_dir).save(taste_dataset("big", 300, 200, 50))  # > the cap
    server, running = create_server(
        ServerConfig(data_dir, port=0, max_dataset_ratings=MAX_DATASET_RATINGS)
    )
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield pb_grpc.MovieEmbeddingServiceStub(channel)
    running.stop(None)


def _train(stub: pb_grpc.MovieEmbeddingServiceStub, **request: Any) -> list[pb.TrainResponse]:
    return list(stub.Train(pb.TrainRequest(model_name="rpc", **request), timeout=120))


def test_train_on_a_dataset_streams_steps_and_describes_the_model(
    stub: pb_grpc.MovieEmbeddingServiceStub,
) -> None:
    *progress, last = _train(
        stub,
        dataset=pb.DatasetTraining(dataset=pb.DatasetRef(name="tastes"), like_threshold=4.5),
        training=pb.TrainingConfig(epochs=2, embedding_dim=8, hidden_units=16),
    )
    assert [p.progress.epoch for p in progress if p.progress.step == p.progress.steps] == [1, 2]
    assert all(p.progress.steps > 0 for p in progress)
    info = last.model
    assert not info.HasField("synthetic")
    assert info.dataset.dataset == pb.DatasetRef(name="tastes", version=1)  # resolved
    assert info.dataset.like_threshold == 4.5
    assert info.dataset.min_likes_per_watcher == 5
    assert info.dataset.HasField("seed")
    assert info.dataset_info.ref == pb.DatasetRef(name="tastes", version=1)
    assert info.dataset_info.num_watchers == 300
    assert info.num_train_watchers > 0 and info.num_heldout_watchers > 0
    assert (info.has_age, info.has_education) == (True, False)
    assert info.training.input_dropout == 0.5  # the dataset preset's
    assert (info.training.embedding_dim, info.training.hidden_units) == (8, 16)
    assert info.num_movies <= 200


@pytest.mark.parametrize(
    ("dataset", "extra", "code", "text"),
    [
        (
            pb.DatasetRef(name="tastes"),
            {"synthetic": pb.SyntheticData(num_watchers=10)},
            grpc.StatusCode.INVALID_ARGUMENT,
            "dataset: set synthetic or dataset, not both",
        ),
        (pb.DatasetRef(), {}, grpc.StatusCode.INVALID_ARGUMENT, "dataset.dataset.name"),
        (pb.DatasetRef(name="Bad!"), {}, grpc.StatusCode.INVALID_ARGUMENT, "dataset.dataset.name"),
        (pb.DatasetRef(name="nope"), {}, grpc.StatusCode.NOT_FOUND, "'nope' not found"),
        (pb.DatasetRef(name="tastes", version=9), {}, grpc.StatusCode.NOT_FOUND, "no version 9"),
        (
            pb.DatasetRef(name="big"),
            {},
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "--max-dataset-ratings",
        ),
    ],
)
def test_train_refuses_before_training(
    stub: pb_grpc.MovieEmbeddingServiceStub,
    dataset: pb.DatasetRef,
    extra: dict[str, Any],
    code: grpc.StatusCode,
    text: str,
) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        _train(stub, dataset=pb.DatasetTraining(dataset=dataset), **extra)
    assert exc.value.code() == code
    assert text in exc.value.details()


def test_a_dataset_that_leaves_no_like_is_a_failed_precondition(
    stub: pb_grpc.MovieEmbeddingServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as exc:
        _train(
            stub, dataset=pb.DatasetTraining(dataset=pb.DatasetRef(name="tastes"), like_threshold=6)
        )
    assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "leaves no watcher" in exc.value.details()
