"""The SDK's conversions between its values and the protobuf messages, both ways."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from movie_embeddings import _convert as convert
from movie_embeddings.types import (
    ModelInfo,
    ModelRef,
    Neighbor,
    Recommendation,
    TrainProgress,
    Watcher,
)
from movie_embeddings.v1 import movie_embeddings_pb2 as pb

# --- model refs ---------------------------------------------------------------------------


def test_none_is_the_newest_default() -> None:
    ref = convert.model_ref(None)
    assert (ref.name, ref.version) == ("", 0)
    assert convert.from_model_ref(ref) == ModelRef("default", 0)


def test_a_string_names_the_newest_version() -> None:
    ref = convert.model_ref("my-model")
    assert (ref.name, ref.version) == ("my-model", 0)
    assert convert.from_model_ref(ref) == ModelRef("my-model", 0)


@pytest.mark.parametrize("value", [ModelRef(), ModelRef("a", 1), ModelRef("x_y-2", 2**40)])
def test_model_ref_round_trip(value: ModelRef) -> None:
    message = convert.model_ref(value)
    assert (message.name, message.version) == (value.name, value.version)
    assert convert.from_model_ref(message) == value
    wire = pb.ModelRef.FromString(message.SerializeToString())
    assert convert.from_model_ref(wire) == value


# --- model info ---------------------------------------------------------------------------


def _info(**synthetic) -> pb.ModelInfo:
    info = pb.ModelInfo(
        ref=pb.ModelRef(name="m", version=4),
        synthetic=pb.SyntheticData(num_watchers=1000, num_movies=80, num_types=10, **synthetic),
        training=pb.TrainingConfig(
            preset=pb.PRESET_NOTEBOOK,
            embedding_dim=5,
            hidden_units=32,
            epochs=10,
            batch_size=32,
            learning_rate=0.001,
            validation_fraction=0.1,
        ),
        metrics={"loss": 0.25, "val_loss": 0.26},
        num_movies=80,
        embedding_dim=5,
        state=pb.MODEL_STATE_READY,
        age_mean=42.5,
        age_std=11.25,
    )
    info.create_time.FromDatetime(datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC))
    return pb.ModelInfo.FromString(info.SerializeToString())  # as received from the wire


def test_model_info_fields() -> None:
    info = convert.model_info(_info(seed=17))
    assert isinstance(info, ModelInfo)
    assert info.ref == ModelRef("m", 4)
    assert (info.name, info.version) == ("m", 4)
    assert info.create_time == datetime(2024, 5, 6, 7, 8, 9, 123000, tzinfo=UTC)
    assert info.create_time.tzinfo is not None
    s = info.synthetic
    assert (s.num_watchers, s.num_movies, s.num_types, s.seed) == (1000, 80, 10, 17)
    t = info.training
    assert t.preset == "notebook"
    assert (t.embedding_dim, t.hidden_units, t.epochs, t.batch_size) == (5, 32, 10, 32)
    assert t.learning_rate == 0.001  # float32 on the wire, shown as written
    assert t.validation_fraction == 0.1
    assert dict(info.metrics) == {"loss": 0.25, "val_loss": 0.26}
    assert (info.num_movies, info.embedding_dim) == (80, 5)
    assert info.state == "ready"
    assert (info.age_mean, info.age_std) == (42.5, 11.25)


def test_model_info_unset_seed_is_none() -> None:
    assert convert.model_info(_info()).synthetic.seed is None


def test_model_info_seed_zero_is_zero() -> None:
    assert convert.model_info(_info(seed=0)).synthetic.seed == 0


def test_model_info_default_preset_and_unknown_state() -> None:
    message = _info()
    message.training.preset = pb.PRESET_DEFAULT
    message.state = pb.MODEL_STATE_UNSPECIFIED
    info = convert.model_info(message)
    assert info.training.preset == "default"
    assert info.state == "unspecified"


def test_model_info_is_frozen() -> None:
    info = convert.model_info(_info())
    with pytest.raises(AttributeError):
        info.num_movies = 3  # type: ignore[misc]


# --- train ----------------------------------------------------------------------------------


def _train_request(seed, preset=None, **training) -> pb.TrainRequest:
    synthetic = {"num_watchers": 100, "num_movies": 20, "num_types": 4, "seed": seed}
    settings = {"preset": preset, "epochs": 3, "learning_rate": 0.01, **training}
    return convert.train_request("m", synthetic | settings)


def test_train_request_fields() -> None:
    request = _train_request(5, preset="notebook", validation_fraction=0.2)
    assert request.model_name == "m"
    s = request.synthetic
    assert (s.num_watchers, s.num_movies, s.num_types, s.seed) == (100, 20, 4, 5)
    assert request.training.preset == pb.PRESET_NOTEBOOK
    assert request.training.epochs == 3
    assert request.training.learning_rate == pytest.approx(0.01)
    assert request.training.validation_fraction == pytest.approx(0.2)


def test_train_request_seed_none_leaves_it_unset() -> None:
    request = pb.TrainRequest.FromString(_train_request(None).SerializeToString())
    assert not request.synthetic.HasField("seed")


def test_train_request_seed_zero_sets_it() -> None:
    request = pb.TrainRequest.FromString(_train_request(0).SerializeToString())
    assert request.synthetic.HasField("seed")
    assert request.synthetic.seed == 0


def test_train_request_large_seed() -> None:
    assert _train_request(2**64 - 1).synthetic.seed == 2**64 - 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("default", pb.PRESET_DEFAULT),
        ("notebook", pb.PRESET_NOTEBOOK),
    ],
)
def test_presets(name, value) -> None:
    assert convert.preset(name) == value
    assert _train_request(1, preset=name).training.preset == value


def test_unset_training_fields_stay_unset() -> None:
    request = _train_request(1, embedding_l2=0.0, validation_fraction=None)
    assert request.training.preset == pb.PRESET_UNSPECIFIED
    assert request.training.HasField("embedding_l2")  # 0 was given: it overrides the preset
    assert not request.training.HasField("validation_fraction")
    assert not request.training.HasField("early_stopping_patience")


def test_learning_rate_schedules() -> None:
    request = _train_request(1, learning_rate_schedule="cosine")
    assert request.training.learning_rate_schedule == pb.LEARNING_RATE_SCHEDULE_COSINE
    with pytest.raises(ValueError, match="learning_rate_schedule"):
        _train_request(1, learning_rate_schedule="linear")


@pytest.mark.parametrize("name", ["fast", "", "Notebook", "PRESET_NOTEBOOK"])
def test_unknown_preset_is_a_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="preset"):
        convert.preset(name)
    with pytest.raises(ValueError):
        _train_request(1, preset=name)


def test_train_event_progress() -> None:
    response = pb.TrainResponse(
        progress=pb.TrainProgress(epoch=2, epochs=5, loss=0.5, val_loss=0.6, elapsed_seconds=1.5)
    )
    assert convert.train_event(response) == TrainProgress(2, 5, 0.5, 0.6, 1.5)


def test_train_event_progress_nan_val_loss_is_none() -> None:
    response = pb.TrainResponse(progress=pb.TrainProgress(epoch=1, epochs=1, val_loss=math.nan))
    event = convert.train_event(pb.TrainResponse.FromString(response.SerializeToString()))
    assert isinstance(event, TrainProgress)
    assert event.val_loss is None


def test_train_event_model() -> None:
    event = convert.train_event(pb.TrainResponse(model=_info(seed=3)))
    assert isinstance(event, ModelInfo)
    assert event.ref == ModelRef("m", 4)
    assert event.synthetic.seed == 3


# --- nearest --------------------------------------------------------------------------------


def test_nearest_request_by_movie_zero_sets_the_oneof() -> None:
    request = convert.nearest_request(None, 0, None, 7, "dot", [1, 2])
    wire = pb.NearestMoviesRequest.FromString(request.SerializeToString())
    assert wire.WhichOneof("query") == "movie_id"
    assert wire.movie_id == 0
    assert wire.k == 7
    assert wire.metric == pb.METRIC_DOT
    assert list(wire.exclude_movie_ids) == [1, 2]
    assert (wire.model.name, wire.model.version) == ("", 0)


def test_nearest_request_by_vector() -> None:
    request = convert.nearest_request(
        ModelRef("m", 2), None, np.array([0.5, -1.25, 3.0]), 3, "cosine", ()
    )
    assert request.WhichOneof("query") == "vector"
    assert list(request.vector.values) == [0.5, -1.25, 3.0]
    assert request.metric == pb.METRIC_COSINE
    assert (request.model.name, request.model.version) == ("m", 2)


def test_nearest_request_by_zero_vector_still_sets_the_oneof() -> None:
    request = convert.nearest_request(None, None, [0.0, 0.0], 3, "euclidean", ())
    wire = pb.NearestMoviesRequest.FromString(request.SerializeToString())
    assert wire.WhichOneof("query") == "vector"
    assert list(wire.vector.values) == [0.0, 0.0]
    assert wire.metric == pb.METRIC_EUCLIDEAN


def test_nearest_request_needs_exactly_one_query() -> None:
    with pytest.raises(ValueError):
        convert.nearest_request(None, None, None, 3, "cosine", ())
    with pytest.raises(ValueError):
        convert.nearest_request(None, 1, [1.0], 3, "cosine", ())


@pytest.mark.parametrize("name", ["COSINE", "l2", "", "manhattan"])
def test_unknown_metric_is_a_value_error(name: str) -> None:
    with pytest.raises(ValueError, match="metric"):
        convert.metric(name)
    with pytest.raises(ValueError):
        convert.nearest_request(None, 1, None, 3, name, ())


def test_neighbors() -> None:
    response = pb.NearestMoviesResponse(
        neighbors=[pb.Neighbor(movie_id=3, score=0.5), pb.Neighbor(movie_id=0, score=-1.0)]
    )
    assert convert.neighbors(response) == [Neighbor(3, 0.5), Neighbor(0, -1.0)]


# --- watchers and reconstructions -----------------------------------------------------------


def test_watcher_with_liked_ids() -> None:
    message = convert.watcher(Watcher(age_years=31.5, education=2, liked_movie_ids=[0, 4]))
    assert list(message.liked_movie_ids) == [0, 4]
    assert list(message.ratings) == []
    assert message.age_years == 31.5
    assert message.education == 2


def test_watcher_with_ratings() -> None:
    ratings = np.array([0.0, 0.25, 1.0], dtype=np.float64)
    message = convert.watcher(Watcher(age_years=20, education=0, ratings=ratings))
    assert list(message.ratings) == [0.0, 0.25, 1.0]
    assert list(message.liked_movie_ids) == []
    message = convert.watcher(Watcher(age_years=20, education=0, ratings=[1, 0]))
    assert list(message.ratings) == [1.0, 0.0]


def test_reconstruction() -> None:
    message = pb.Reconstruction(
        probabilities=[0.1, 0.9, 0.5],
        recommendations=[pb.Recommendation(movie_id=2, probability=0.5)],
    )
    r = convert.reconstruction(pb.Reconstruction.FromString(message.SerializeToString()))
    assert isinstance(r.probabilities, np.ndarray)
    assert r.probabilities.dtype == np.float32
    np.testing.assert_allclose(r.probabilities, [0.1, 0.9, 0.5], rtol=1e-7)
    assert r.recommendations == (Recommendation(2, 0.5),)


def test_reconstruction_without_recommendations() -> None:
    r = convert.reconstruction(pb.Reconstruction(probabilities=[0.5]))
    assert r.recommendations == ()
    assert r.probabilities.shape == (1,)


def test_vector_is_float32() -> None:
    v = convert.vector([1, 2, 3])
    assert v.dtype == np.float32
    assert v.tolist() == [1.0, 2.0, 3.0]
