"""The SDK's values: frozen dataclasses and float32 numpy arrays, never protobuf messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

DEFAULT_MODEL = "default"


@dataclass(frozen=True)
class ModelRef:
    """A model version: the one `label` names (e.g. "stable", set by set_model_label), else
    `version`, 0 meaning the newest."""

    name: str = DEFAULT_MODEL
    version: int = 0
    label: str = ""


@dataclass(frozen=True)
class SyntheticData:
    """The generated training data: sizes and the generator's seed."""

    num_watchers: int
    num_movies: int
    num_types: int
    seed: int | None


@dataclass(frozen=True)
class TrainingConfig:
    """How a version was trained; preset is "default" or "notebook"."""

    preset: str
    embedding_dim: int
    hidden_units: int
    epochs: int
    batch_size: int
    learning_rate: float
    validation_fraction: float
    embedding_initializer: str
    embedding_l2: float
    early_stopping_patience: int
    learning_rate_schedule: str
    input_dropout: float = 0.0


@dataclass(frozen=True)
class ModelInfo:
    """A stored model version, trained on synthetic data (`synthetic`) or on a stored dataset
    (`dataset`, `dataset_info`); the other is None."""

    ref: ModelRef
    create_time: datetime
    synthetic: SyntheticData | None
    training: TrainingConfig
    metrics: Mapping[str, float]
    num_movies: int
    embedding_dim: int
    state: str
    age_mean: float
    age_std: float
    history: tuple[TrainProgress, ...] = ()
    dataset: DatasetTraining | None = None
    dataset_info: DatasetInfo | None = None
    num_train_watchers: int = 0
    num_heldout_watchers: int = 0
    has_age: bool = True  # False: the model ignores a watcher's age
    has_education: bool = True
    labels: tuple[str, ...] = ()  # the model's labels that name this version

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> int:
        return self.ref.version


@dataclass(frozen=True)
class TrainProgress:
    """Training progress: the end of an epoch (step == steps), or `step` gradient steps into
    a long one; losses in nats per movie (val_loss None without a split)."""

    epoch: int
    epochs: int
    loss: float
    val_loss: float | None
    elapsed_seconds: float
    step: int = 0
    steps: int = 0
    epoch_seconds_left: float = 0.0  # estimated, from this epoch's pace so far
    run_seconds_left: float = 0.0  # estimated, to the epoch limit (early stopping: sooner)


@dataclass(frozen=True)
class Neighbor:
    """A movie near the query; higher score is nearer for every metric."""

    movie_id: int
    score: float
    title: str = ""  # "" when the model's catalogue has none


@dataclass(frozen=True)
class Recommendation:
    """A movie the watcher has not liked, with the probability the model gives it; asked with
    `because=True`, the (up to) 3 liked movies nearest to it that led to it, nearest first."""

    movie_id: int
    probability: float
    title: str = ""
    because_movie_ids: tuple[int, ...] = ()
    because_titles: tuple[str, ...] = ()


@dataclass(frozen=True, eq=False)
class Reconstruction:
    """The model's output for one watcher: a like-probability per movie, and recommendations."""

    probabilities: np.ndarray
    recommendations: tuple[Recommendation, ...] = ()


@dataclass(frozen=True, eq=False)
class ReconstructionBatch:
    """The model's output for many watchers as arrays (from Client.reconstruct_batch)."""

    probabilities: np.ndarray  # (watchers, movies) float32
    recommended_movie_ids: np.ndarray  # (watchers, top_k) int32; -1 pads short rows

    def __len__(self) -> int:
        return len(self.probabilities)

    def __getitem__(self, i: int) -> Reconstruction:
        """Watcher i's output in the form Client.reconstruct gives it."""
        row = self.probabilities[i]
        ids = self.recommended_movie_ids[i]
        return Reconstruction(
            row, tuple(Recommendation(int(m), float(row[m])) for m in ids[ids >= 0])
        )


@dataclass(frozen=True, eq=False)
class Watcher:
    """A watcher to reconstruct: ratings (one per movie, in [0, 1]) or the ids it liked; or,
    alone, `watcher_id`: a watcher of the model's dataset, its likes and features the
    dataset's (age_years and education then 0)."""

    age_years: float
    education: int
    liked_movie_ids: Sequence[int] = ()
    ratings: np.ndarray | Sequence[float] | None = field(default=None)
    watcher_id: int | None = None


@dataclass(frozen=True)
class DatasetRef:
    """A dataset version; version 0 means the newest."""

    name: str
    version: int = 0


@dataclass(frozen=True)
class DatasetInfo:
    """A stored dataset version: its counts, which watcher features it has, its rating range."""

    ref: DatasetRef
    create_time: datetime
    num_ratings: int
    num_watchers: int
    num_movies: int
    has_age: bool
    has_education: bool
    min_rating: float
    max_rating: float
    num_titled_movies: int
    description: str
    num_duplicate_ratings: int  # rows that repeated a (watcher, movie) pair; the last was kept
    num_dropped_watchers: int  # watchers with features but no rating
    size_bytes: int

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def version(self) -> int:
        return self.ref.version


@dataclass(frozen=True)
class DatasetTraining:
    """How a model's training rows came from a dataset: a rating >= like_threshold is a like;
    watchers and movies with fewer likes were left out; holdout_fraction of the watchers was
    held out of training (split by `seed`)."""

    dataset: DatasetRef
    like_threshold: float
    min_likes_per_watcher: int
    min_likes_per_movie: int
    holdout_fraction: float
    seed: int | None


@dataclass(frozen=True)
class Movie:
    """A movie of a model's catalogue, with its likes among the model's training watchers."""

    movie_id: int
    title: str
    genres: tuple[str, ...]
    num_likes: int


@dataclass(frozen=True, eq=False)
class MovieVectors:
    """Movies' vectors with their catalogue entries, row i of `vectors` being movie_ids[i]: a
    page of StreamMovieVectors, or a whole catalogue (Client.movie_table)."""

    movie_ids: np.ndarray  # int64, (n,)
    titles: tuple[str, ...]
    genres: tuple[tuple[str, ...], ...]
    num_likes: np.ndarray  # int64, (n,): likes among the model's training watchers
    vectors: np.ndarray  # float32, (n, embedding_dim)
    model: ModelRef

    def __len__(self) -> int:
        return len(self.movie_ids)


# --- columns of a dataset to import ----------------------------------------------------------


def _column(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    return array


def _integers(values: Any, name: str, dtype: type[np.signedinteger[Any]]) -> np.ndarray:
    """An integer column; floats must hold whole numbers, and every value must fit `dtype`
    (ids travel as int32 or int64)."""
    array = _column(values, name)
    if array.dtype == dtype:
        return array
    bounds = np.iinfo(dtype)
    if array.dtype.kind in "iu":
        bad = (array < bounds.min) | (array > bounds.max)
    else:
        try:
            array = array.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{name} must be integers: {exc}") from exc
        bad = ~((array == np.round(array)) & (array >= bounds.min) & (array <= bounds.max))
    if bad.any():
        row = int(np.argmax(bad))
        raise ValueError(
            f"{name}[{row}] must be an integer in {bounds.min}..{bounds.max}, got {array[row]}"
        )
    return array.astype(dtype)


def _floats(values: Any, name: str) -> np.ndarray:
    try:
        return _column(values, name).astype(np.float32, copy=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers: {exc}") from exc


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        missing = value is None or bool(value != value)  # NaN: pandas' missing value
    except TypeError:  # pandas.NA has no truth value
        missing = True
    return "" if missing else str(value)


def _strings(values: Any, name: str) -> np.ndarray:
    """A column of str; missing values (None, NaN, pandas.NA) become ""."""
    array = _column(values, name)
    if array.dtype.kind == "U":
        return array.astype(object)
    return np.array([_text(v) for v in array], dtype=object)


def _same_length(where: str, **columns: np.ndarray | None) -> None:
    lengths = {k: len(v) for k, v in columns.items() if v is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"{where} columns differ in length: {lengths}")


def _pick(table: Any, names: tuple[str, ...], where: str, required: bool = True) -> Any:
    """Column `names[0]` (or its other spelling) of a dict of arrays, a pandas DataFrame or a
    pyarrow Table; None when absent and not required."""
    found = list(getattr(table, "column_names", None) or table.keys())
    for name in names:
        if name in found:
            return table[name]
    if required:
        spelled = " or ".join(repr(n) for n in names)
        raise ValueError(f"{where} have no column {spelled}; columns: {found}")
    return None


@dataclass(frozen=True, eq=False)
class RatingColumns:
    """Ratings as columns of equal length: row i is watcher_ids[i] rating movie_ids[i] with
    ratings[i]. The constructor converts and checks the columns (lists, arrays, Series)."""

    watcher_ids: np.ndarray  # int64; only groups the ratings
    movie_ids: np.ndarray  # int32, the dataset's own movie ids
    ratings: np.ndarray  # float32, any finite scale
    timestamps: np.ndarray | None = None  # int64 Unix seconds, or None: not known

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "watcher_ids", _integers(self.watcher_ids, "watcher_ids", np.int64))
        set_(self, "movie_ids", _integers(self.movie_ids, "movie_ids", np.int32))
        set_(self, "ratings", _floats(self.ratings, "ratings"))
        if self.timestamps is not None:
            set_(self, "timestamps", _integers(self.timestamps, "timestamps", np.int64))
        _same_length("rating", **vars(self))

    def __len__(self) -> int:
        return len(self.watcher_ids)

    @classmethod
    def from_table(cls, table: Any) -> RatingColumns:
        """Columns watcher_id, movie_id, rating and optionally timestamp (or their plurals)."""
        if isinstance(table, RatingColumns):
            return table
        return cls(
            _pick(table, ("watcher_ids", "watcher_id"), "ratings"),
            _pick(table, ("movie_ids", "movie_id"), "ratings"),
            _pick(table, ("ratings", "rating"), "ratings"),
            _pick(table, ("timestamps", "timestamp"), "ratings", required=False),
        )


@dataclass(frozen=True, eq=False)
class MovieColumns:
    """The catalogue as columns: movie ids with titles and genres ("A|B|C"); "" or a None
    column = none."""

    movie_ids: np.ndarray  # int32
    titles: np.ndarray | None = None  # str (object array)
    genres: np.ndarray | None = None  # str (object array), "A|B|C" as MovieLens writes them

    def __post_init__(self) -> None:
        object.__setattr__(self, "movie_ids", _integers(self.movie_ids, "movie_ids", np.int32))
        for name in ("titles", "genres"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _strings(getattr(self, name), name))
        _same_length("movie", **vars(self))

    def __len__(self) -> int:
        return len(self.movie_ids)

    @classmethod
    def from_table(cls, table: Any) -> MovieColumns:
        """Columns movie_id and optionally title and genres (or their plurals)."""
        if isinstance(table, MovieColumns):
            return table
        return cls(
            _pick(table, ("movie_ids", "movie_id"), "movies"),
            _pick(table, ("titles", "title"), "movies", required=False),
            _pick(table, ("genres",), "movies", required=False),
        )


@dataclass(frozen=True, eq=False)
class WatcherColumns:
    """Watcher features as columns: a None column is absent for everyone, NaN for one watcher."""

    watcher_ids: np.ndarray  # int64
    age_years: np.ndarray | None = None  # float32 years
    education: np.ndarray | None = None  # float32 holding whole numbers (int32 on the wire)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "watcher_ids", _integers(self.watcher_ids, "watcher_ids", np.int64)
        )
        for name in ("age_years", "education"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, _floats(getattr(self, name), name))
        if self.education is not None:
            known = ~np.isnan(self.education)
            _integers(self.education[known], "education (where known)", np.int32)
        _same_length("watcher", **vars(self))

    def __len__(self) -> int:
        return len(self.watcher_ids)

    @classmethod
    def from_table(cls, table: Any) -> WatcherColumns:
        """Columns watcher_id and optionally age_years (or age) and education."""
        if isinstance(table, WatcherColumns):
            return table
        return cls(
            _pick(table, ("watcher_ids", "watcher_id"), "watchers"),
            _pick(table, ("age_years", "age"), "watchers", required=False),
            _pick(table, ("education",), "watchers", required=False),
        )


@dataclass(frozen=True, eq=False)
class DatasetColumns:
    """What to import: ratings, and optionally the catalogue and the watchers' features."""

    ratings: RatingColumns
    movies: MovieColumns | None = None
    watchers: WatcherColumns | None = None

    @classmethod
    def from_tables(cls, ratings: Any, movies: Any = None, watchers: Any = None) -> DatasetColumns:
        """From the column classes or any tables with those columns (dicts of arrays, pandas
        DataFrames, pyarrow Tables); `ratings` may be a DatasetColumns, whose movies and
        watchers are kept unless given."""
        if isinstance(ratings, DatasetColumns):
            movies = ratings.movies if movies is None else movies
            watchers = ratings.watchers if watchers is None else watchers
            ratings = ratings.ratings
        return cls(
            RatingColumns.from_table(ratings),
            None if movies is None else MovieColumns.from_table(movies),
            None if watchers is None else WatcherColumns.from_table(watchers),
        )
