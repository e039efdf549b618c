"""Every conversion between the SDK's values and the protobuf messages, in one place."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC
from typing import Any

import numpy as np
import numpy.typing as npt

from .types import (
    DEFAULT_MODEL,
    DatasetColumns,
    DatasetInfo,
    DatasetRef,
    DatasetTraining,
    ModelInfo,
    ModelRef,
    Movie,
    MovieVectors,
    Neighbor,
    Recommendation,
    Reconstruction,
    ReconstructionBatch,
    SyntheticData,
    TrainingConfig,
    TrainProgress,
    Watcher,
)
from .v1 import movie_embeddings_pb2 as pb

PRESETS = {"default": pb.PRESET_DEFAULT, "notebook": pb.PRESET_NOTEBOOK}
SCHEDULES = {
    "constant": pb.LEARNING_RATE_SCHEDULE_CONSTANT,
    "cosine": pb.LEARNING_RATE_SCHEDULE_COSINE,
}
METRICS = {"cosine": pb.METRIC_COSINE, "dot": pb.METRIC_DOT, "euclidean": pb.METRIC_EUCLIDEAN}
_PRESET_NAMES = {v: k for k, v in PRESETS.items()}
_SCHEDULE_NAMES = {v: k for k, v in SCHEDULES.items()}
_STATE_NAMES = {pb.MODEL_STATE_READY: "ready"}

ModelArg = str | ModelRef | None
DatasetArg = str | DatasetRef
_SYNTHETIC_FIELDS = tuple(pb.SyntheticData.DESCRIPTOR.fields_by_name)
# DatasetTraining's own settings; its `dataset` and `seed` are handled apart.
_DATASET_FIELDS = tuple(set(pb.DatasetTraining.DESCRIPTOR.fields_by_name) - {"dataset", "seed"})


def model_ref(model: ModelArg) -> pb.ModelRef:
    """None = newest "default"; a string names the newest version of that model."""
    if model is None:
        return pb.ModelRef()
    if isinstance(model, str):
        return pb.ModelRef(name=model)
    return pb.ModelRef(name=model.name, version=model.version, label=model.label)


def from_model_ref(ref: pb.ModelRef) -> ModelRef:
    return ModelRef(name=ref.name or DEFAULT_MODEL, version=ref.version, label=ref.label)


def movie_vectors_page(response: pb.StreamMovieVectorsResponse) -> MovieVectors:
    """One page of StreamMovieVectors (never empty: a page holds at least one movie)."""
    rows = response.vectors
    return MovieVectors(
        movie_ids=np.array([v.movie_id for v in rows], dtype=np.int64),
        titles=tuple(v.title for v in rows),
        genres=tuple(tuple(v.genres) for v in rows),
        num_likes=np.array([v.num_likes for v in rows], dtype=np.int64),
        vectors=np.array([v.vector for v in rows], dtype=np.float32).reshape(len(rows), -1),
        model=from_model_ref(response.model),
    )


def joined(pages: list[MovieVectors]) -> MovieVectors:
    """Pages of one stream as one MovieVectors (at least one page)."""
    return MovieVectors(
        movie_ids=np.concatenate([p.movie_ids for p in pages]),
        titles=tuple(t for p in pages for t in p.titles),
        genres=tuple(g for p in pages for g in p.genres),
        num_likes=np.concatenate([p.num_likes for p in pages]),
        vectors=np.concatenate([p.vectors for p in pages]),
        model=pages[0].model,
    )


def dataset_ref(dataset: DatasetArg, version: int = 0) -> pb.DatasetRef:
    """A name (with `version`, 0 = the newest) or a DatasetRef."""
    if isinstance(dataset, DatasetRef):
        return pb.DatasetRef(name=dataset.name, version=dataset.version)
    return pb.DatasetRef(name=dataset, version=version)


def from_dataset_ref(ref: pb.DatasetRef) -> DatasetRef:
    return DatasetRef(name=ref.name, version=ref.version)


def _enum(field: str, names: dict[str, Any], name: str) -> Any:
    if name not in names:
        raise ValueError(f"{field} must be one of {sorted(names)}, got {name!r}")
    return names[name]


def preset(name: str) -> pb.Preset.ValueType:
    return _enum("preset", PRESETS, name)  # type: ignore[no-any-return]


def metric(name: str) -> pb.Metric.ValueType:
    return _enum("metric", METRICS, name)  # type: ignore[no-any-return]


def vector(values: npt.ArrayLike) -> np.ndarray:
    return np.asarray(values, dtype=np.float32)


def _float32(x: float) -> float:
    """A float field's value as written (0.001, not 0.0010000000474974513)."""
    return float(f"{x:.7g}")


def _seed(message: pb.SyntheticData | pb.DatasetTraining) -> int | None:
    return message.seed if message.HasField("seed") else None


def synthetic_data(s: pb.SyntheticData) -> SyntheticData:
    return SyntheticData(s.num_watchers, s.num_movies, s.num_types, _seed(s))


def model_info(info: pb.ModelInfo) -> ModelInfo:
    t = info.training
    return ModelInfo(
        ref=from_model_ref(info.ref),
        create_time=info.create_time.ToDatetime(tzinfo=UTC),
        synthetic=synthetic_data(info.synthetic) if info.HasField("synthetic") else None,
        training=TrainingConfig(
            preset=_PRESET_NAMES.get(t.preset, "default"),
            embedding_dim=t.embedding_dim,
            hidden_units=t.hidden_units,
            epochs=t.epochs,
            batch_size=t.batch_size,
            learning_rate=_float32(t.learning_rate),
            validation_fraction=_float32(t.validation_fraction),
            embedding_initializer=t.embedding_initializer,
            embedding_l2=_float32(t.embedding_l2),
            early_stopping_patience=t.early_stopping_patience,
            learning_rate_schedule=_SCHEDULE_NAMES.get(t.learning_rate_schedule, "unspecified"),
            input_dropout=_float32(t.input_dropout),
        ),
        metrics=dict(info.metrics),
        num_movies=info.num_movies,
        embedding_dim=info.embedding_dim,
        state=_STATE_NAMES.get(info.state, "unspecified"),
        age_mean=info.age_mean,
        age_std=info.age_std,
        history=tuple(progress(p) for p in info.history),
        dataset=dataset_training(info.dataset) if info.HasField("dataset") else None,
        dataset_info=dataset_info(info.dataset_info) if info.HasField("dataset_info") else None,
        num_train_watchers=info.num_train_watchers,
        num_heldout_watchers=info.num_heldout_watchers,
        has_age=info.has_age,
        has_education=info.has_education,
        labels=tuple(info.labels),
    )


def dataset_training(t: pb.DatasetTraining) -> DatasetTraining:
    return DatasetTraining(
        dataset=from_dataset_ref(t.dataset),
        like_threshold=_float32(t.like_threshold),
        min_likes_per_watcher=t.min_likes_per_watcher,
        min_likes_per_movie=t.min_likes_per_movie,
        holdout_fraction=_float32(t.holdout_fraction),
        seed=_seed(t),
    )


def dataset_info(info: pb.DatasetInfo) -> DatasetInfo:
    return DatasetInfo(
        ref=from_dataset_ref(info.ref),
        create_time=info.create_time.ToDatetime(tzinfo=UTC),
        num_ratings=info.num_ratings,
        num_watchers=info.num_watchers,
        num_movies=info.num_movies,
        has_age=info.has_age,
        has_education=info.has_education,
        min_rating=_float32(info.min_rating),
        max_rating=_float32(info.max_rating),
        num_titled_movies=info.num_titled_movies,
        description=info.description,
        num_duplicate_ratings=info.num_duplicate_ratings,
        num_dropped_watchers=info.num_dropped_watchers,
        size_bytes=info.size_bytes,
    )


def movie(m: pb.Movie) -> Movie:
    return Movie(m.movie_id, m.title, tuple(m.genres), m.num_likes)


def progress(p: pb.TrainProgress) -> TrainProgress:
    val_loss = None if math.isnan(p.val_loss) else p.val_loss
    return TrainProgress(
        p.epoch,
        p.epochs,
        p.loss,
        val_loss,
        p.elapsed_seconds,
        step=p.step,
        steps=p.steps,
        epoch_seconds_left=p.epoch_seconds_left,
        run_seconds_left=p.run_seconds_left,
    )


def train_event(response: pb.TrainResponse) -> TrainProgress | ModelInfo:
    if response.WhichOneof("event") == "model":
        return model_info(response.model)
    return progress(response.progress)


def train_request(model: str, settings: Mapping[str, Any]) -> pb.TrainRequest:
    """SyntheticData, DatasetTraining and TrainingConfig fields in one mapping; None leaves a
    field unset (the server's default); `preset` and `learning_rate_schedule` are names.
    With `dataset` (a name or DatasetRef) the model trains on that dataset and `seed` is the
    split's; without it, on synthetic data."""
    given = {k: v for k, v in settings.items() if v is not None}
    dataset = given.pop("dataset", None)
    from_dataset = {k: given.pop(k) for k in _DATASET_FIELDS if k in given}
    synthetic = {k: given.pop(k) for k in _SYNTHETIC_FIELDS if k in given}
    if "preset" in given:
        given["preset"] = preset(given["preset"])
    if "learning_rate_schedule" in given:
        given["learning_rate_schedule"] = _enum(
            "learning_rate_schedule", SCHEDULES, given["learning_rate_schedule"]
        )
    training = pb.TrainingConfig(**given)
    if dataset is None:
        if from_dataset:
            raise ValueError(f"{min(from_dataset)} needs dataset=")
        data = pb.SyntheticData(**synthetic)
        return pb.TrainRequest(model_name=model, synthetic=data, training=training)
    if "seed" in synthetic:
        from_dataset["seed"] = synthetic.pop("seed")
    if synthetic:
        raise ValueError(f"{min(synthetic)} is for synthetic data, not with dataset=")
    source = pb.DatasetTraining(dataset=dataset_ref(dataset), **from_dataset)
    return pb.TrainRequest(model_name=model, dataset=source, training=training)


def import_requests(
    name: str, description: str, columns: DatasetColumns, chunk_rows: int
) -> Iterator[tuple[pb.ImportDatasetRequest, int]]:
    """The ImportDataset stream, each message with the rows it carries: the header, then
    ratings, watchers and movies in chunks of at most `chunk_rows` rows."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    header = pb.DatasetHeader(name=name, description=description)
    yield pb.ImportDatasetRequest(header=header), 0
    for part, rows, fields in import_chunks(columns, chunk_rows):
        message = pb.ImportDatasetRequest()
        chunk = getattr(message, part)
        table = getattr(columns, part)
        for field in fields:
            values = getattr(table, field)[rows]
            if field == "education":
                values = values.astype(np.int32)  # whole numbers, all known in this chunk
            # extend() on the message's own field: no copy of the finished chunk.
            getattr(chunk, field).extend(values.tolist())
        yield message, len(values)


ImportChunk = tuple[str, slice | np.ndarray, tuple[str, ...]]


def import_chunks(columns: DatasetColumns, chunk_rows: int) -> Iterator[ImportChunk]:
    """How import_requests lays the tables out after its header, one message at a time: the
    table ("ratings", "watchers" or "movies"), its rows (a slice or indices) and the columns
    the message carries (a column left out is empty on the wire)."""
    r = columns.ratings
    rating_fields = ("watcher_ids", "movie_ids", "ratings", "timestamps")
    yield from _slices(
        "ratings", len(r), chunk_rows, rating_fields[: 3 if r.timestamps is None else 4]
    )
    if (w := columns.watchers) is not None:
        # A chunk's feature column is all or nothing on the wire, so watchers travel in
        # groups by which of their features are known (NaN = unknown).
        has_age, has_education = _known(w.age_years, len(w)), _known(w.education, len(w))
        for age, education in itertools.product((True, False), repeat=2):
            group = np.flatnonzero((has_age == age) & (has_education == education))
            fields = ("watcher_ids",) + ("age_years",) * age + ("education",) * education
            for start in range(0, len(group), chunk_rows):
                yield "watchers", group[start : start + chunk_rows], fields
    if (m := columns.movies) is not None:
        movie_fields = tuple(
            f for f in ("movie_ids", "titles", "genres") if getattr(m, f) is not None
        )
        yield from _slices("movies", len(m), chunk_rows, movie_fields)


def _known(values: np.ndarray | None, n: int) -> np.ndarray:
    return np.zeros(n, dtype=bool) if values is None else ~np.isnan(values)


def _slices(part: str, n: int, chunk_rows: int, fields: tuple[str, ...]) -> Iterator[ImportChunk]:
    for start in range(0, n, chunk_rows):
        yield part, slice(start, min(start + chunk_rows, n)), fields


# A row of one chunk, as the server names it in a refusal: chunks[3].ratings.movie_ids[17].
_CHUNK_ROW = re.compile(r"chunks\[(\d+)\]\.(ratings|watchers|movies)\.(\w+)\[(\d+)\]")


def in_table_terms(
    text: str,
    columns: DatasetColumns,
    chunk_rows: int,
    where: Callable[[str, int, str], str],
) -> str:
    """`text` (an ImportDataset refusal) with each row of a chunk it names, in the stream
    import_requests made of `columns`, replaced by `where(table, row, column)`: the row of
    that table ("ratings", "watchers" or "movies") the chunk's row carried, found by laying
    the stream out again."""
    last = max((int(m.group(1)) for m in _CHUNK_ROW.finditer(text)), default=0)
    chunks = itertools.islice(import_chunks(columns, chunk_rows), last)
    places = dict(enumerate(chunks, start=1))  # the header is chunks[0]

    def replace(match: re.Match[str]) -> str:
        index, part, column, row = match.groups()
        place = places.get(int(index))
        if place is None or place[0] != part or column not in place[2]:
            return match.group(0)
        rows = place[1]
        span = range(rows.start, rows.stop) if isinstance(rows, slice) else rows
        if int(row) >= len(span):
            return match.group(0)
        return where(part, int(span[int(row)]), column)

    return _CHUNK_ROW.sub(replace, text)


def nearest_request(
    model: ModelArg,
    movie_id: int | None,
    query: np.ndarray | Sequence[float] | None,
    k: int,
    metric_name: str,
    exclude: Sequence[int],
) -> pb.NearestMoviesRequest:
    if (movie_id is None) == (query is None):
        raise ValueError("give exactly one of movie_id or vector")
    request = pb.NearestMoviesRequest(
        model=model_ref(model), k=k, metric=metric(metric_name), exclude_movie_ids=list(exclude)
    )
    if movie_id is not None:
        request.movie_id = movie_id
    else:
        request.vector.values[:] = vector(np.asarray(query)).tolist()
    return request


_FILTER_FIELDS = ("min_likes", "genres", "exclude_genres")


def set_filter(
    request: pb.NearestMoviesRequest | pb.ReconstructRequest, filters: Mapping[str, Any]
) -> None:
    """The request's MovieFilter from min_likes, genres and exclude_genres (None or empty:
    left unset); a lone string is one genre, not its letters."""
    unknown = set(filters) - set(_FILTER_FIELDS)
    if unknown:
        raise TypeError(f"unknown filter {min(unknown)!r}; filters: {', '.join(_FILTER_FIELDS)}")
    if filters.get("min_likes") is not None:
        request.filter.min_likes = filters["min_likes"]
    for field in ("genres", "exclude_genres"):
        if given := filters.get(field):
            getattr(request.filter, field).extend([given] if isinstance(given, str) else given)


def neighbors(response: pb.NearestMoviesResponse) -> list[Neighbor]:
    return [Neighbor(n.movie_id, n.score, n.title) for n in response.neighbors]


def watcher(w: Watcher) -> pb.Watcher:
    message = pb.Watcher(
        age_years=w.age_years, education=w.education, liked_movie_ids=list(w.liked_movie_ids)
    )
    if w.ratings is not None:
        message.ratings[:] = vector(np.asarray(w.ratings)).tolist()
    if w.watcher_id is not None:
        message.watcher_id = w.watcher_id
    return message


def batch_request(
    model: ModelArg,
    ratings: npt.ArrayLike,
    age_years: npt.ArrayLike,
    education: npt.ArrayLike,
    top_k: int,
) -> pb.ReconstructRequest:
    """The dense form: ratings travel as one little-endian float32 byte string."""
    matrix = np.ascontiguousarray(ratings, dtype="<f4")
    if matrix.ndim != 2:
        raise ValueError(f"ratings must be a (watchers, movies) matrix, got shape {matrix.shape}")
    return pb.ReconstructRequest(
        model=model_ref(model),
        top_k=top_k,
        batch=pb.WatcherBatch(
            ratings=matrix.tobytes(),
            age_years=np.asarray(age_years, dtype=np.float32).tolist(),
            education=np.asarray(education, dtype=np.int64).tolist(),
        ),
    )


def reconstruction_batch(batch: pb.ReconstructionBatch, n: int, top_k: int) -> ReconstructionBatch:
    probabilities = np.frombuffer(batch.probabilities, dtype="<f4")
    ids = np.frombuffer(batch.recommended_movie_ids, dtype="<i4")
    return ReconstructionBatch(
        probabilities.astype(np.float32).reshape(n, -1) if n else probabilities.reshape(0, 0),
        ids.astype(np.int32).reshape(n, top_k),
    )


def reconstruction(r: pb.Reconstruction) -> Reconstruction:
    return Reconstruction(
        probabilities=vector(r.probabilities),
        recommendations=tuple(
            Recommendation(
                x.movie_id,
                x.probability,
                x.title,
                tuple(x.because_movie_ids),
                tuple(x.because_titles),
            )
            for x in r.recommendations
        ),
    )
