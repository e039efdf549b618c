"""A loaded model version answering queries from numpy arrays: the forward pass and its answers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FailedPrecondition, InvalidArgument, NotFound
from . import known_watchers, search
from .catalogue import Catalogue
from .search import Product
from .watchers import WatcherInput, Watchers, check_ratings

# Answers kept per version for repeated by-id queries (a few hundred bytes each); the memo
# starts over once it holds this many.
MEMO_ANSWERS = 16384
WEIGHT_NAMES = ("embedding", "hidden_kernel", "hidden_bias", "output_kernel", "output_bias")


def check_top_k(top_k: int) -> None:
    if top_k < 0:
        raise InvalidArgument("top_k", f"must be >= 0, got {top_k}")


def sigmoid_of_negated(z: np.ndarray) -> np.ndarray:
    """sigmoid(-z) = 1 / (1 + exp(z)), in place: the output layer's product is the negated
    logits, so no call negates them. exp(z) past 88.7 is inf in float32 and its probability
    0, as it should be (Keras's is below 1e-38); that overflow is no error here."""
    with np.errstate(over="ignore"):
        np.exp(z, out=z)
    z += 1.0
    return np.reciprocal(z, out=z)


class ServedModel(WatcherInput):
    """One model version: its weights, age statistics, catalogue and metadata, prepared once
    at load. Requests and answers name movies by the catalogue's ids; the arrays are in rows.
    The forward pass is here, on the movie vectors and neighbours of MovieVectors and the
    watchers WatcherInput makes of a request."""

    def __init__(
        self,
        name: str,
        version: int,
        weights: dict[str, np.ndarray],
        meta: dict[str, Any],
        catalogue: Catalogue | None = None,
    ):
        self.name = name
        self.version = version
        self.meta = meta
        super().__init__(weights["embedding"], catalogue)
        self.catalogue.owner = f"model {name} v{version}"
        # A model trained without a feature takes it as absent: 0 after standardisation.
        self.has_age = bool(meta.get("has_age", True))
        self.has_education = bool(meta.get("has_education", True))
        hidden_kernel = weights["hidden_kernel"].astype(np.float32)
        units = hidden_kernel.shape[1]
        self.age_mean = float(meta["age_mean"])
        self.age_std = float(meta["age_std"])
        # The embedding and the hidden layer are both linear before the relu, so one
        # ((2 + movies + 1) x (units + 1)) matrix takes [age, education, ratings, 1] to the
        # hidden layer (its last row: the bias). One watcher by liked ids then adds up rows of
        # it instead of multiplying a (1, movies) row through it (59,047 movies: 0.01 ms, not
        # 10). Its last column makes one more unit, always 1 (and so after the relu), that
        # carries the output bias through the output product.
        self.input_to_hidden = np.zeros((2 + self.num_movies + 1, units + 1), np.float32)
        self.input_to_hidden[:2, :units] = hidden_kernel[:2]
        self.input_to_hidden[2:-1, :units] = self.embedding @ hidden_kernel[2:]
        self.input_to_hidden[-1, :units] = weights["hidden_bias"]
        self.input_to_hidden[-1, units] = 1.0
        # The output layer, bias as its last row, negated: the product is minus the logits.
        output = np.vstack([weights["output_kernel"], weights["output_bias"]])
        self.negated_output = -output.astype(np.float32, copy=False)
        # Whatever the serving layer keeps for repeated queries, keyed as it likes; it goes
        # with the version.
        self.memo: dict[Any, Any] = {}
        # Where the version is stored (set by the store that read it): its known watchers'
        # file, mapped on the first query that names a watcher by its id.
        self.directory: Path | None = None
        self._known: known_watchers.KnownWatchers | None = None
        self._known_lock = threading.Lock()

    def remember(self, key: Any, answer: Any) -> Any:
        """Keep `answer` in the memo (bounded: it starts over when full) and return it."""
        if len(self.memo) >= MEMO_ANSWERS:
            self.memo.clear()
        self.memo[key] = answer
        return answer

    def forward(self, watchers: Watchers) -> np.ndarray:
        """The Keras model's output, (n, movies) float32: the same layers in numpy."""
        x = np.empty((len(watchers.ratings), 2 + self.num_movies), dtype=np.float32)
        x[:, 0] = (watchers.age_years - self.age_mean) / self.age_std if self.has_age else 0.0
        x[:, 1] = watchers.education if self.has_education else 0.0
        x[:, 2:] = watchers.ratings
        hidden = x @ self.input_to_hidden[:-1]
        hidden += self.input_to_hidden[-1]
        np.maximum(hidden, 0.0, out=hidden)
        return self.probabilities(hidden)

    def reconstruct(self, watchers: Watchers, top_k: int) -> tuple[np.ndarray, list[np.ndarray]]:
        """Probabilities per watcher, and the rows of its top_k likeliest movies not liked
        (rating < 0.5)."""
        probabilities, padded = self.reconstruct_padded(watchers, top_k)
        if not top_k:
            return probabilities, []
        return probabilities, search.unpadded(padded)

    def reconstruct_padded(
        self, watchers: Watchers, top_k: int, leave_out: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """`reconstruct` with the recommended rows as one (watchers, top_k) matrix, -1 where a
        watcher has fewer than top_k movies not liked (nor masked by `leave_out`, a filter's
        rows)."""
        check_top_k(top_k)
        probabilities = self.forward(watchers)
        excluded = watchers.ratings >= 0.5
        if leave_out is not None:
            excluded |= leave_out
        return probabilities, search.top_k_padded(probabilities, top_k, excluded)

    def reconstruct_one(
        self,
        ratings: Sequence[float],
        liked: Sequence[int],
        age_years: float,
        education: int,
        top_k: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """`reconstruct` of one watcher: probabilities (movies,) and the rows of its top_k
        likeliest movies not liked."""
        hidden, excluded = self.hidden_one(0, ratings, liked, age_years, education)
        check_top_k(top_k)
        probabilities = self.probabilities(hidden)
        return probabilities, search.top_k(probabilities, top_k, excluded)

    def hidden_one(
        self,
        i: int,
        ratings: Sequence[float],
        liked: Sequence[int],
        age_years: float,
        education: int,
    ) -> tuple[np.ndarray, list[int]]:
        """Watcher i of a request: its hidden layer (units + 1,), the last unit the constant 1
        that carries the output bias, and the rows it liked (never recommended to it); in
        about ten numpy calls on vectors (each a microsecond or two). The hidden layer adds up
        the folded rows of the rated movies, the features' rows and the bias row."""
        self._check_watcher(i, ratings, liked, age_years, education)
        age = (age_years - self.age_mean) / self.age_std if self.has_age else 0.0
        level = education if self.has_education else 0
        # Only the rows of rated movies enter the sum, in the same order for ratings and for
        # liked ids: a watcher described either way gets the very same floats.
        if ratings:
            values = np.array(ratings[:], np.float32)
            check_ratings(values[None], lambda _: f"watchers[{i}].ratings")
            rows = np.flatnonzero(values).tolist()
            weights = values[rows].tolist()
            excluded = np.flatnonzero(values >= 0.5).tolist()
        else:
            rows = excluded = self._liked_rows(i, liked)
            weights = [1.0] * len(rows)
        x = np.array([age, level, *weights, 1.0], np.float32)
        hidden = x @ self.input_to_hidden.take([0, 1, *[r + 2 for r in rows], -1], axis=0)
        return np.maximum(hidden, 0.0, out=hidden), excluded

    def probabilities(self, hidden: np.ndarray) -> np.ndarray:
        """Every movie's probability from hidden layers (hidden_one's; one or a stack of
        them): one pass over the output layer, whatever their number."""
        return sigmoid_of_negated(self.negated_logits(hidden))

    def negated_logits(self, hidden: np.ndarray, product: Product = np.matmul) -> np.ndarray:
        """Minus every movie's logit from hidden layers: the pass over the output layer that
        `probabilities` makes, before the sigmoid (sigmoid_of_negated); `product(left,
        right)` multiplies (the serving side may split it over cores)."""
        return product(hidden, self.negated_output)

    def known_watcher(self, i: int, watcher_id: int) -> tuple[list[int], float, int]:
        """Watcher i of a request named by its dataset id: the ids of the movies it liked (as
        the model's dataset version has them, held-out watchers included), and the age and
        education to run it with, an absent one as training took it (the mean age,
        education 0)."""
        field = f"watchers[{i}].watcher_id"
        source = self.meta.get("dataset")
        if not source:
            raise InvalidArgument(
                field,
                f"model {self.name} v{self.version} was trained on synthetic data, whose "
                "watchers have no ids: give liked_movie_ids or ratings",
            )
        known = self._known_watchers()
        found = known.find(watcher_id)
        if found is None:
            dataset = source["dataset"]
            raise NotFound(
                f"{field}: watcher {watcher_id} is not one of the {len(known):,} watchers model "
                f"{self.name} v{self.version} kept from dataset {dataset['name']} "
                f"v{dataset['version']} (those with at least "
                f"{source['min_likes_per_watcher']} likes)"
            )
        liked = self.catalogue.ids(found.liked_rows).tolist()
        age = found.age_years if np.isfinite(found.age_years) else self.age_mean
        education = int(found.education) if np.isfinite(found.education) else 0
        return liked, age if self.has_age else 0.0, education

    def _known_watchers(self) -> known_watchers.KnownWatchers:
        """The version's watchers file, mapped once (a few pages read per lookup)."""
        with self._known_lock:
            if self._known is None:
                path = self.directory / known_watchers.FILE if self.directory else None
                if path is None or not path.exists():
                    raise FailedPrecondition(
                        f"model {self.name} v{self.version} has no watchers stored (it was "
                        "trained before versions kept them): train it again to name watchers "
                        "by id"
                    )
                self._known = known_watchers.KnownWatchers(path)
            return self._known
