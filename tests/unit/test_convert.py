"""The SDK's conversions between its values and the protobuf messages, both ways."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from movie_embeddings import _calls
from movie_embeddings import _convert as convert
from movie_embeddings.types import (
    DatasetColumns,
    DatasetInfo,
    DatasetRef,
    DatasetTraining,
    ModelInfo,
    ModelRef,
    Movie,
    MovieColumns,
    Neighbor,
    RatingColumns,
    Recommendation,
    TrainProgress,
    Watcher,
    WatcherColumns,
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


@pytest.mark.parametrize(
    "value",
    [ModelRef(), ModelRef("a", 1), ModelRef("x_y-2", 2**40), ModelRef("m", label="stable")],
)
def test_model_ref_round_trip(value: ModelRef) -> None:
    message = convert.model_ref(value)
    assert (message.name, message.version, message.label) == (
        value.name,
        value.version,
        value.label,
    )
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


def test_model_info_labels() -> None:
    assert convert.model_info(_info()).labels == ()
    message = _info()
    message.labels.extend(["canary", "stable"])
    assert convert.model_info(message).labels == ("canary", "stable")


def test_delete_and_label_requests() -> None:
    assert _calls.delete_model("m", 0).request == pb.DeleteModelRequest(model=pb.ModelRef(name="m"))
    one = _calls.delete_model(ModelRef("m", 3), 0).request
    assert one == _calls.delete_model("m", 3).request
    assert one.model == pb.ModelRef(name="m", version=3)
    call = _calls.set_model_label("m", "stable", 2)
    assert call.request == pb.SetModelLabelRequest(name="m", label="stable", version=2)
    reply = pb.SetModelLabelResponse(labels={"stable": 2, "canary": 1})
    assert call.read(reply) == {"canary": 1, "stable": 2}


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


def test_watcher_by_its_dataset_id() -> None:
    message = convert.watcher(Watcher(0, 0, watcher_id=0))  # 0 is an id: the field is set
    assert message.HasField("watcher_id") and message.watcher_id == 0
    assert not convert.watcher(Watcher(30, 1, [1])).HasField("watcher_id")


def test_recommendations_with_the_liked_movies_behind_them() -> None:
    message = pb.Reconstruction(
        recommendations=[
            pb.Recommendation(
                movie_id=7,
                probability=0.25,
                title="Seven",
                because_movie_ids=[3, 1],
                because_titles=["Three", "One"],
            )
        ]
    )
    r = convert.reconstruction(pb.Reconstruction.FromString(message.SerializeToString()))
    assert r.recommendations == (Recommendation(7, 0.25, "Seven", (3, 1), ("Three", "One")),)


def test_filters_fill_the_requests_movie_filter() -> None:
    request = pb.NearestMoviesRequest()
    convert.set_filter(request, {})
    assert not request.HasField("filter")  # none: the server's default
    convert.set_filter(request, {"min_likes": 0, "genres": "Drama", "exclude_genres": ["A", "B"]})
    assert request.filter.HasField("min_likes") and request.filter.min_likes == 0
    assert list(request.filter.genres) == ["Drama"]  # one genre, not its letters
    assert list(request.filter.exclude_genres) == ["A", "B"]
    request = pb.ReconstructRequest()
    convert.set_filter(request, {"min_likes": None, "genres": None})
    assert not request.HasField("filter")
    with pytest.raises(TypeError, match="unknown filter 'genre'"):
        convert.set_filter(request, {"genre": ["Drama"]})


def test_reconstruction_without_recommendations() -> None:
    r = convert.reconstruction(pb.Reconstruction(probabilities=[0.5]))
    assert r.recommendations == ()
    assert r.probabilities.shape == (1,)


def test_vector_is_float32() -> None:
    v = convert.vector([1, 2, 3])
    assert v.dtype == np.float32
    assert v.tolist() == [1.0, 2.0, 3.0]


# --- titles, steps --------------------------------------------------------------------------


def test_neighbors_and_recommendations_carry_titles() -> None:
    response = pb.NearestMoviesResponse(neighbors=[pb.Neighbor(movie_id=73, score=0.5, title="X")])
    assert convert.neighbors(response) == [Neighbor(73, 0.5, "X")]
    r = convert.reconstruction(
        pb.Reconstruction(recommendations=[pb.Recommendation(movie_id=1, probability=0.25)])
    )
    assert r.recommendations == (Recommendation(1, 0.25, ""),)  # no title: ""


def test_train_event_progress_inside_an_epoch() -> None:
    message = pb.TrainProgress(epoch=1, epochs=3, loss=0.5, step=120, steps=977)
    event = convert.train_event(pb.TrainResponse(progress=message))
    assert isinstance(event, TrainProgress)
    assert (event.step, event.steps) == (120, 977)


# --- datasets -------------------------------------------------------------------------------


def _dataset_info() -> pb.DatasetInfo:
    info = pb.DatasetInfo(
        ref=pb.DatasetRef(name="ml", version=3),
        num_ratings=100_836,
        num_watchers=610,
        num_movies=9_742,
        has_age=True,
        has_education=False,
        min_rating=0.5,
        max_rating=5.0,
        num_titled_movies=9_700,
        description="ml-latest-small",
        num_duplicate_ratings=2,
        num_dropped_watchers=1,
        size_bytes=2**33,
    )
    info.create_time.FromDatetime(datetime(2026, 11, 29, 10, 0, 1, tzinfo=UTC))
    return pb.DatasetInfo.FromString(info.SerializeToString())


def test_dataset_info_fields() -> None:
    info = convert.dataset_info(_dataset_info())
    assert info == DatasetInfo(
        ref=DatasetRef("ml", 3),
        create_time=datetime(2026, 11, 29, 10, 0, 1, tzinfo=UTC),
        num_ratings=100_836,
        num_watchers=610,
        num_movies=9_742,
        has_age=True,
        has_education=False,
        min_rating=0.5,
        max_rating=5.0,
        num_titled_movies=9_700,
        description="ml-latest-small",
        num_duplicate_ratings=2,
        num_dropped_watchers=1,
        size_bytes=2**33,
    )
    assert (info.name, info.version) == ("ml", 3)
    every = set(pb.DatasetInfo.DESCRIPTOR.fields_by_name)
    assert every == set(DatasetInfo.__dataclass_fields__)  # no field of the proto left out


@pytest.mark.parametrize(
    ("dataset", "version", "expected"),
    [("ml", 0, ("ml", 0)), ("ml", 2, ("ml", 2)), (DatasetRef("x", 5), 0, ("x", 5))],
)
def test_dataset_ref(dataset, version, expected) -> None:
    ref = convert.dataset_ref(dataset, version)
    assert (ref.name, ref.version) == expected
    assert convert.from_dataset_ref(ref) == DatasetRef(*expected)


def test_model_info_of_a_dataset_model() -> None:
    message = _info()
    message.ClearField("synthetic")
    message.dataset.CopyFrom(
        pb.DatasetTraining(
            dataset=pb.DatasetRef(name="ml", version=3),
            like_threshold=4.0,
            min_likes_per_watcher=5,
            min_likes_per_movie=1,
            holdout_fraction=0.1,
            seed=0,
        )
    )
    message.dataset_info.CopyFrom(_dataset_info())
    message.training.input_dropout = 0.5
    message.num_train_watchers, message.num_heldout_watchers = 500, 55
    message.has_age, message.has_education = False, False
    info = convert.model_info(pb.ModelInfo.FromString(message.SerializeToString()))
    assert info.synthetic is None
    assert info.dataset == DatasetTraining(DatasetRef("ml", 3), 4.0, 5, 1, 0.1, 0)
    assert info.dataset_info == convert.dataset_info(_dataset_info())
    assert info.training.input_dropout == 0.5
    assert (info.num_train_watchers, info.num_heldout_watchers) == (500, 55)
    assert (info.has_age, info.has_education) == (False, False)


def test_model_info_of_a_synthetic_model_has_no_dataset() -> None:
    info = convert.model_info(_info(seed=1))
    assert info.synthetic is not None
    assert (info.dataset, info.dataset_info) == (None, None)


def test_movie() -> None:
    message = pb.Movie(movie_id=73, title="Misérables, Les (1995)", genres=["Drama", "War"])
    message.num_likes = 2**40
    movie = convert.movie(pb.Movie.FromString(message.SerializeToString()))
    assert movie == Movie(73, "Misérables, Les (1995)", ("Drama", "War"), 2**40)


def test_train_request_on_a_dataset() -> None:
    settings = {"dataset": "ml", "like_threshold": 3.5, "holdout_fraction": 0.0, "seed": 0}
    request = convert.train_request("m", settings | {"input_dropout": 0.25, "epochs": 2})
    wire = pb.TrainRequest.FromString(request.SerializeToString())
    assert not wire.HasField("synthetic")
    d = wire.dataset
    assert (d.dataset.name, d.dataset.version) == ("ml", 0)
    assert d.like_threshold == 3.5
    assert d.HasField("holdout_fraction") and d.holdout_fraction == 0.0  # 0 was given
    assert d.HasField("seed") and d.seed == 0
    assert d.min_likes_per_watcher == 0  # the server's default
    assert wire.training.input_dropout == 0.25
    assert wire.training.epochs == 2
    request = convert.train_request("m", {"dataset": DatasetRef("ml", 4), "seed": None})
    assert request.dataset.dataset.version == 4
    assert not request.dataset.HasField("seed")


def test_train_request_keeps_synthetic_and_dataset_settings_apart() -> None:
    with pytest.raises(ValueError, match="num_watchers is for synthetic data"):
        convert.train_request("m", {"dataset": "ml", "num_watchers": 10})
    with pytest.raises(ValueError, match="like_threshold needs dataset="):
        convert.train_request("m", {"like_threshold": 4.0})


# --- dataset columns and the import stream -----------------------------------------------------


def test_rating_columns_convert_what_they_are_given() -> None:
    r = RatingColumns([1, 2], np.array([3.0, 4.0]), [5, 4.5], timestamps=None)
    assert (r.watcher_ids.dtype, r.movie_ids.dtype, r.ratings.dtype) == (
        np.int64,
        np.int32,
        np.float32,
    )
    assert r.movie_ids.tolist() == [3, 4]
    assert len(r) == 2


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"movie_ids": [1.5, 2]}, r"movie_ids\[0\] must be an integer"),
        ({"movie_ids": [1, 2**31]}, r"movie_ids\[1\] must be an integer in -2147483648"),
        ({"watcher_ids": [1, np.nan]}, r"watcher_ids\[1\]"),
        ({"watcher_ids": ["a", "b"]}, "watcher_ids must be integers"),
        ({"ratings": [1.0]}, "rating columns differ in length"),
        ({"timestamps": [[1, 2]]}, "timestamps must be one-dimensional"),
    ],
)
def test_rating_columns_refuse_what_cannot_travel(columns, message) -> None:
    given = {"watcher_ids": [1, 2], "movie_ids": [3, 4], "ratings": [1.0, 2.0]} | columns
    with pytest.raises(ValueError, match=message):
        RatingColumns(**given)


def test_columns_from_tables() -> None:
    import pandas  # a dev dependency: the SDK takes DataFrames

    frame = pandas.DataFrame(
        {"watcher_id": [1, 1], "movie_id": [2, 3], "rating": [4.0, 5.0], "other": [0, 0]}
    )
    movies = {"movie_id": [2, 3], "title": ["Two", None]}
    data = DatasetColumns.from_tables(frame, movies=movies)
    assert data.ratings.movie_ids.tolist() == [2, 3]
    assert data.ratings.timestamps is None
    assert data.movies is not None and data.movies.titles is not None
    assert data.movies.titles.tolist() == ["Two", ""]
    assert data.movies.genres is None
    assert DatasetColumns.from_tables(data).movies is data.movies
    with pytest.raises(ValueError, match=r"ratings have no column 'ratings' or 'rating'"):
        DatasetColumns.from_tables({"watcher_id": [1], "movie_id": [2]})


def _stream(data: DatasetColumns, chunk_rows: int) -> list[tuple[pb.ImportDatasetRequest, int]]:
    return [
        (pb.ImportDatasetRequest.FromString(m.SerializeToString()), rows)
        for m, rows in convert.import_requests("ml", "from a test", data, chunk_rows)
    ]


def test_import_stream_round_trip() -> None:
    rng = np.random.default_rng(0)
    ratings = RatingColumns(
        rng.integers(0, 2**40, 250), rng.integers(0, 2**31 - 1, 250), rng.random(250), None
    )
    movies = MovieColumns([5, 6, 7], ["Five", "Six, The", "Sept"], ["A|B", "", "C"])
    stream = _stream(DatasetColumns(ratings, movies), chunk_rows=100)
    header, rows = stream[0]
    assert header.WhichOneof("part") == "header" and rows == 0
    assert (header.header.name, header.header.description) == ("ml", "from a test")
    parts = [(m.WhichOneof("part"), rows) for m, rows in stream[1:]]
    assert parts == [("ratings", 100), ("ratings", 100), ("ratings", 50), ("movies", 3)]
    chunks = [m.ratings for m, _ in stream[1:4]]
    for name in ("watcher_ids", "movie_ids", "ratings"):
        sent = np.concatenate([getattr(c, name) for c in chunks])
        np.testing.assert_array_equal(
            sent.astype(getattr(ratings, name).dtype), getattr(ratings, name)
        )
    assert all(len(c.timestamps) == 0 for c in chunks)  # unknown: an empty column
    m = stream[4][0].movies
    assert (list(m.movie_ids), list(m.titles), list(m.genres)) == (
        [5, 6, 7],
        ["Five", "Six, The", "Sept"],
        ["A|B", "", "C"],
    )


def test_import_stream_groups_watchers_by_the_features_they_have() -> None:
    nan = np.nan
    watchers = WatcherColumns([1, 2, 3, 4], [30.0, nan, 40.0, nan], [2.0, 1.0, nan, nan])
    data = DatasetColumns(RatingColumns([1], [1], [1.0]), watchers=watchers)
    chunks = [m.watchers for m, _ in _stream(data, 10) if m.WhichOneof("part") == "watchers"]
    got = [(list(c.watcher_ids), list(c.age_years), list(c.education)) for c in chunks]
    assert got == [([1], [30.0], [2]), ([3], [40.0], []), ([2], [], [1]), ([4], [], [])]


def test_watcher_columns_need_whole_educations() -> None:
    with pytest.raises(ValueError, match="education"):
        WatcherColumns([1], education=[1.5])


def test_import_stream_needs_a_positive_chunk_size() -> None:
    with pytest.raises(ValueError, match="chunk_rows"):
        _stream(DatasetColumns(RatingColumns([1], [1], [1.0])), 0)


def test_import_call_reports_rows_sent() -> None:
    calls: list[tuple[int, int]] = []
    data = DatasetColumns(RatingColumns([1] * 5, [1] * 5, [1.0] * 5), MovieColumns([1, 2]))
    call = _calls.import_dataset("ml", data, None, None, "", 2, lambda *a: calls.append(a))
    assert len(list(call.request)) == 1 + 3 + 1
    assert calls == [(2, 7), (4, 7), (5, 7), (7, 7)]
    with pytest.raises(ValueError, match="chunk_rows"):  # before any message is sent
        _calls.import_dataset("ml", data, None, None, "", 0, None)


# --- what the remaining conversions carry, exactly ------------------------------------------


def test_batch_request_sends_ratings_as_little_endian_float32_bytes() -> None:
    ratings = np.array([[0.0, 0.5, 1.0], [1.0, 0.25, 0.0]])  # float64 in
    request = convert.batch_request(ModelRef("m", 2), ratings, [30, 41.5], [1.0, 3.0], top_k=4)
    wire = pb.ReconstructRequest.FromString(request.SerializeToString())
    assert (wire.model.name, wire.model.version, wire.top_k) == ("m", 2, 4)
    assert wire.batch.ratings == ratings.astype("<f4").tobytes()
    assert list(wire.batch.age_years) == [30.0, 41.5]
    assert list(wire.batch.education) == [1, 3]
    with pytest.raises(ValueError) as refused:
        convert.batch_request("m", [0.5, 0.5, 0.5], [30], [1], top_k=1)
    assert str(refused.value) == "ratings must be a (watchers, movies) matrix, got shape (3,)"


def test_reconstruction_batch_reads_the_byte_strings_back() -> None:
    probabilities = np.array([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], "<f4")
    ids = np.array([[2, 0], [1, -1]], "<i4")  # -1 pads a short row
    message = pb.ReconstructionBatch(
        probabilities=probabilities.tobytes(), recommended_movie_ids=ids.tobytes()
    )
    batch = convert.reconstruction_batch(message, 2, 2)
    assert batch.probabilities.dtype == np.float32
    np.testing.assert_array_equal(batch.probabilities, probabilities)
    assert batch.recommended_movie_ids.dtype == np.int32
    np.testing.assert_array_equal(batch.recommended_movie_ids, ids)
    empty = convert.reconstruction_batch(pb.ReconstructionBatch(), 0, 3)
    assert empty.probabilities.shape == (0, 0) and empty.recommended_movie_ids.shape == (0, 3)


def test_model_info_carries_every_training_setting_and_the_history() -> None:
    message = _info()
    t = message.training
    t.embedding_initializer = "zeros"
    t.embedding_l2 = 0.015
    t.early_stopping_patience = 30
    t.learning_rate_schedule = pb.LEARNING_RATE_SCHEDULE_COSINE
    message.history.extend(
        [pb.TrainProgress(epoch=1, epochs=2, loss=0.5), pb.TrainProgress(epoch=2, epochs=2)]
    )
    info = convert.model_info(message)
    training = info.training
    assert (training.embedding_initializer, training.embedding_l2) == ("zeros", 0.015)
    assert training.early_stopping_patience == 30
    assert training.learning_rate_schedule == "cosine"
    assert [(p.epoch, p.epochs, p.loss) for p in info.history] == [(1, 2, 0.5), (2, 2, 0.0)]


def test_model_info_names_enum_values_it_does_not_know() -> None:
    message = _info()
    message.training.preset = 77  # a newer server's preset
    message.training.learning_rate_schedule = 77
    training = convert.model_info(message).training
    assert (training.preset, training.learning_rate_schedule) == ("default", "unspecified")


@pytest.mark.parametrize(
    ("convert_it", "message"),
    [
        (
            lambda: convert.preset("fast"),
            "preset must be one of ['default', 'notebook'], got 'fast'",
        ),
        (
            lambda: convert.metric("cos"),
            "metric must be one of ['cosine', 'dot', 'euclidean'], got 'cos'",
        ),
        (
            lambda: convert.train_request("m", {"learning_rate_schedule": "step"}),
            "learning_rate_schedule must be one of ['constant', 'cosine'], got 'step'",
        ),
        (
            lambda: convert.nearest_request("m", None, None, 3, "cosine", []),
            "give exactly one of movie_id or vector",
        ),
    ],
)
def test_value_errors_say_what_is_allowed(convert_it, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        convert_it()
    assert str(refused.value) == message


def test_a_dataset_train_request_names_its_model() -> None:
    assert convert.train_request("m", {"dataset": "ml"}).model_name == "m"


def test_recommendations_keep_their_titles() -> None:
    r = convert.reconstruction(
        pb.Reconstruction(recommendations=[pb.Recommendation(movie_id=1, title="One")])
    )
    assert r.recommendations == (Recommendation(1, 0.0, "One"),)


def test_import_stream_of_one_row_chunks_with_timestamps() -> None:
    ratings = RatingColumns([1, 2], [5, 6], [3.0, 4.0], [100, 200])
    chunks = [m.ratings for m, _ in _stream(DatasetColumns(ratings), 1)[1:]]
    assert [(list(c.watcher_ids), list(c.timestamps)) for c in chunks] == [
        ([1], [100]),
        ([2], [200]),
    ]


@pytest.mark.parametrize("absent", ["age_years", "education"])
def test_import_stream_of_watchers_without_a_feature_column(absent: str) -> None:
    given = {"age_years": [30.0, 40.0], "education": [1.0, 2.0]} | {absent: None}
    watchers = WatcherColumns([1, 2], **given)
    data = DatasetColumns(RatingColumns([1], [1], [1.0]), watchers=watchers)
    (chunk,) = [m.watchers for m, _ in _stream(data, 10) if m.WhichOneof("part") == "watchers"]
    assert list(chunk.watcher_ids) == [1, 2]
    assert len(getattr(chunk, absent)) == 0
