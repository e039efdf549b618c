"""Zero means default, presets fill the rest, and every bound names its field."""

from __future__ import annotations

import dataclasses

import pytest

from movie_embeddings_server import config
from movie_embeddings_server.errors import InvalidArgument, ResourceExhausted

# --- synthetic data -----------------------------------------------------------------------


def test_synthetic_defaults() -> None:
    spec = config.resolve_synthetic({})
    assert (spec.num_watchers, spec.num_movies, spec.num_types) == (1000, 80, 10)


def test_synthetic_explicit_fields_override() -> None:
    spec = config.resolve_synthetic(
        {"num_watchers": 7, "num_movies": 20, "num_types": 4, "seed": 5}
    )
    assert spec == config.SyntheticSpec(num_watchers=7, num_movies=20, num_types=4, seed=5)


def test_random_seed_is_filled_in_when_unset() -> None:
    seeds = {config.resolve_synthetic({}).seed for _ in range(20)}
    seeds |= {config.resolve_synthetic({"seed": None}).seed for _ in range(20)}
    assert None not in seeds
    assert all(isinstance(s, int) and 0 <= s < 2**64 for s in seeds)
    assert len(seeds) > 1  # random, not a fixed default


def test_seed_zero_is_kept() -> None:
    assert config.resolve_synthetic({"seed": 0}).seed == 0


def test_large_seed_is_kept() -> None:
    assert config.resolve_synthetic({"seed": 2**64 - 1}).seed == 2**64 - 1


@pytest.mark.parametrize("field", ["num_watchers", "num_movies", "num_types"])
def test_negative_sizes_are_invalid(field: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        config.resolve_synthetic({field: -1, "seed": 1})
    assert exc.value.field == f"synthetic.{field}"
    assert "-1" in str(exc.value)


def test_more_types_than_movies_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as exc:
        config.resolve_synthetic({"num_movies": 5, "num_types": 6, "seed": 1})
    assert exc.value.field == "synthetic.num_types"
    # The default num_types (10) counts too.
    with pytest.raises(InvalidArgument):
        config.resolve_synthetic({"num_movies": 9, "seed": 1})
    assert config.resolve_synthetic({"num_movies": 6, "num_types": 6, "seed": 1}).num_types == 6


def test_cells_over_the_cap_are_resource_exhausted() -> None:
    with pytest.raises(ResourceExhausted, match="1001"):
        config.resolve_synthetic(
            {"num_watchers": 1001, "num_movies": 1, "num_types": 1}, config.Limits(max_cells=1000)
        )
    spec = config.resolve_synthetic(
        {"num_watchers": 1000, "num_movies": 1, "num_types": 1}, config.Limits(max_cells=1000)
    )
    assert spec.num_watchers == 1000


def test_default_cap_applies() -> None:
    with pytest.raises(ResourceExhausted):
        config.resolve_synthetic({"num_watchers": config.Limits().max_cells // 80 + 1})
    config.resolve_synthetic({"num_watchers": config.Limits().max_cells // 80})


def test_resolve_does_not_mutate_the_request() -> None:
    given = {"num_watchers": 5, "seed": None}
    config.resolve_synthetic(given)
    assert given == {"num_watchers": 5, "seed": None}


# --- training -----------------------------------------------------------------------------


def test_default_preset() -> None:
    spec = config.resolve_training({})
    assert spec == config.resolve_training({"preset": "default"})
    assert spec.preset == "default"
    assert spec.embedding_dim == 5
    assert spec.hidden_units == 32
    assert spec.embedding_initializer == "zeros"
    assert (spec.epochs, spec.batch_size, spec.learning_rate) == (24, 64, 0.02)
    assert (spec.embedding_l2, spec.learning_rate_schedule) == (0.015, "cosine")
    assert (spec.validation_fraction, spec.early_stopping_patience) == (0, 0)


@pytest.mark.parametrize("preset", [None, ""])
def test_unset_preset_is_default(preset) -> None:
    assert config.resolve_training({"preset": preset}) == config.resolve_training({})


def test_notebook_preset_is_the_notebook() -> None:
    spec = config.resolve_training({"preset": "notebook"})
    assert spec.preset == "notebook"
    assert spec.embedding_initializer == "glorot_uniform"
    assert spec.epochs == 10
    assert spec.batch_size == 32
    assert spec.learning_rate == pytest.approx(0.001)
    assert spec.validation_fraction == 0
    assert spec.embedding_dim == 5
    assert spec.hidden_units == 32
    assert (spec.embedding_l2, spec.learning_rate_schedule) == (0, "constant")
    assert spec.early_stopping_patience == 0
    assert spec == config.TrainSpec()  # the dataclass's own defaults are the notebook's


def test_given_fields_override_even_with_zero() -> None:
    # The servicer passes only the fields a request set; a set 0 must win over the preset.
    spec = config.resolve_training({"embedding_l2": 0.0, "learning_rate_schedule": "constant"})
    assert (spec.embedding_l2, spec.learning_rate_schedule) == (0.0, "constant")
    assert spec.embedding_initializer == "zeros"  # the rest stays the default preset's


def test_explicit_fields_override_the_preset() -> None:
    spec = config.resolve_training(
        {
            "preset": "notebook",
            "embedding_dim": 8,
            "hidden_units": 16,
            "epochs": 3,
            "batch_size": 64,
            "learning_rate": 0.01,
            "validation_fraction": 0.2,
        }
    )
    assert spec == config.TrainSpec(
        preset="notebook",
        embedding_dim=8,
        hidden_units=16,
        epochs=3,
        batch_size=64,
        learning_rate=0.01,
        validation_fraction=0.2,
        embedding_initializer="glorot_uniform",
    )


def test_unknown_preset_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as exc:
        config.resolve_training({"preset": "fast"})
    assert exc.value.field == "training.preset"


@pytest.mark.parametrize(
    ("field", "bad", "good"),
    [
        ("embedding_dim", -1, 1),
        ("embedding_dim", 257, 256),
        ("hidden_units", -1, 1),
        ("hidden_units", 4097, 4096),
        ("epochs", -1, 1),
        ("epochs", 1001, 1000),
        ("batch_size", -1, 1),
        ("batch_size", 1_000_001, 1_000_000),
        ("learning_rate", -0.001, 1e-6),
        ("learning_rate", 1.5, 1.0),
        ("learning_rate", float("nan"), 0.5),
        ("validation_fraction", -0.1, 0.0),
        ("validation_fraction", 1.0, 0.99),
        ("validation_fraction", float("nan"), 0.5),
    ],
)
def test_training_bounds_name_the_field(field: str, bad, good) -> None:
    with pytest.raises(InvalidArgument) as exc:
        config.resolve_training({field: bad})
    assert exc.value.field == f"training.{field}"
    assert field in str(exc.value)
    spec = config.resolve_training({field: good})
    expected = getattr(config.TrainSpec(), field) if good == 0 else good
    assert getattr(spec, field) == expected


@pytest.mark.parametrize(
    ("watchers", "fraction", "ok"),
    [(1, 0.5, False), (10, 0.01, False), (10, 0.99, True), (10, 0.1, True), (1, 0.0, True)],
)
def test_validation_split_must_leave_watchers_on_both_sides(
    watchers: int, fraction: float, ok: bool
) -> None:
    synthetic = config.resolve_synthetic({"num_watchers": watchers, "seed": 0})
    training = config.resolve_training({"validation_fraction": fraction})
    if ok:
        config.check_split(synthetic, training)
    else:
        with pytest.raises(InvalidArgument) as info:
            config.check_split(synthetic, training)
        assert info.value.field == "training.validation_fraction"


# --- training on a dataset ----------------------------------------------------------------


def test_a_dataset_default_preset_of_its_own() -> None:
    spec = config.resolve_training({}, source="dataset")
    assert spec.preset == "default"
    assert (spec.embedding_dim, spec.hidden_units, spec.input_dropout) == (200, 600, 0.5)
    # Glorot, not zeros: a zero kernel with absent features passes no gradient (DESIGN §6).
    assert spec.embedding_initializer == "glorot_uniform"
    assert (spec.learning_rate, spec.learning_rate_schedule, spec.embedding_l2) == (
        0.003,
        "cosine",
        1e-5,
    )
    # Stopped early on a validation split's NDCG@100: the best epoch depends on the data.
    assert (spec.epochs, spec.validation_fraction, spec.early_stopping_patience) == (50, 0.1, 10)
    assert config.resolve_training({}).input_dropout == 0  # synthetic data: none


def test_the_notebook_preset_is_the_notebook_for_any_source() -> None:
    assert config.resolve_training({"preset": "notebook"}, source="dataset") == config.TrainSpec()


def test_given_fields_override_the_dataset_preset() -> None:
    spec = config.resolve_training({"input_dropout": 0.0, "epochs": 2}, source="dataset")
    assert (spec.input_dropout, spec.epochs, spec.hidden_units) == (0.0, 2, 600)


@pytest.mark.parametrize(("bad", "good"), [(-0.1, 0.0), (1.0, 0.99), (float("nan"), 0.5)])
def test_input_dropout_bound(bad: float, good: float) -> None:
    with pytest.raises(InvalidArgument) as exc:
        config.resolve_training({"input_dropout": bad})
    assert exc.value.field == "training.input_dropout"
    assert config.resolve_training({"input_dropout": good}).input_dropout == good


def test_dataset_training_defaults_and_a_random_seed() -> None:
    spec = config.resolve_dataset_training({"dataset": {"name": "ml"}})
    assert spec.dataset == config.DatasetRef("ml", 0)
    assert (spec.like_threshold, spec.min_likes_per_watcher, spec.min_likes_per_movie) == (4, 5, 1)
    assert spec.holdout_fraction == 0.1
    assert spec.seed is not None
    seeds = {config.resolve_dataset_training({"dataset": {"name": "ml"}}).seed for _ in range(5)}
    assert len(seeds) > 1
    # Resolving a resolved spec (as the trainer process does with its JSON) changes nothing.
    assert config.resolve_dataset_training(dataclasses.asdict(spec)) == spec


@pytest.mark.parametrize(
    ("field", "bad", "good"),
    [
        ("dataset.name", "", "ml"),
        ("dataset.version", -1, 3),
        ("like_threshold", float("nan"), -2.5),
        ("like_threshold", float("inf"), 10.0),
        ("min_likes_per_watcher", -1, 0),
        ("min_likes_per_movie", -1, 0),
        ("holdout_fraction", -0.1, 0.0),
        ("holdout_fraction", 1.0, 0.9),
        ("seed", -1, 0),
        ("seed", 2**64, 2**64 - 1),
    ],
)
def test_dataset_training_bounds_name_the_field(field: str, bad, good) -> None:
    def given(value) -> dict:
        ref = {"name": "ml", "version": 0}
        if field.startswith("dataset."):
            return {"dataset": {**ref, field.removeprefix("dataset."): value}}
        return {"dataset": ref, field: value}

    with pytest.raises(InvalidArgument) as exc:
        config.resolve_dataset_training(given(bad))
    assert exc.value.field == f"dataset.{field}"
    spec = config.resolve_dataset_training(given(good))
    owner = spec.dataset if field.startswith("dataset.") else spec
    assert getattr(owner, field.removeprefix("dataset.")) == good


# --- what each refusal says ---------------------------------------------------------------

SPLIT = config.SyntheticSpec(num_watchers=0, seed=1)


@pytest.mark.parametrize(
    ("call", "field", "description"),
    [
        (
            lambda: config.resolve_synthetic({"num_movies": -3}),
            "synthetic.num_movies",
            "must be >= 0, got -3",
        ),
        (
            lambda: config.resolve_synthetic({"num_movies": 5, "num_types": 6}),
            "synthetic.num_types",
            "must be <= num_movies (5), got 6",
        ),
        (
            lambda: config.resolve_training({"preset": "fast"}),
            "training.preset",
            "must be one of ('default', 'notebook'), got 'fast'",
        ),
        (
            lambda: config.resolve_training({"epochs": 1001}),
            "training.epochs",
            "must be between 1 and 1000, got 1001",
        ),
        (
            lambda: config.resolve_training({"learning_rate": 0.0}),
            "training.learning_rate",
            "must be > 0 and <= 1, got 0",
        ),
        (
            lambda: config.resolve_training({"validation_fraction": 1.0}),
            "training.validation_fraction",
            "must be >= 0 and < 1, got 1",
        ),
        (
            lambda: config.resolve_training({"learning_rate_schedule": "step"}),
            "training.learning_rate_schedule",
            "must be one of ('constant', 'cosine'), got 'step'",
        ),
        (
            lambda: config.resolve_training({"embedding_initializer": "ones"}),
            "training.embedding_initializer",
            "must be one of " + ", ".join(config.INITIALIZERS) + ", got 'ones'",
        ),
        (
            lambda: config.resolve_training({"embedding_l2": 1.5}),
            "training.embedding_l2",
            "must be between 0 and 1, got 1.5",
        ),
        (
            lambda: config.resolve_training(
                {"early_stopping_patience": 1001, "validation_fraction": 0.1}
            ),
            "training.early_stopping_patience",
            "must be between 0 and 1000, got 1001",
        ),
        (
            lambda: config.resolve_training({"input_dropout": 1.0}),
            "training.input_dropout",
            "must be >= 0 and < 1, got 1",
        ),
        (
            lambda: config.resolve_training({"early_stopping_patience": 3}),
            "training.early_stopping_patience",
            "needs validation_fraction > 0 (it watches the validation split)",
        ),
        (
            lambda: config.check_split(
                SPLIT, config.resolve_training({"validation_fraction": 0.5})
            ),
            "training.validation_fraction",
            "0.5 of 0 watchers leaves no watcher on one side of the split",
        ),
        (
            lambda: config.resolve_dataset_training({}),
            "dataset.dataset.name",
            "required: the dataset to train on",
        ),
        (
            lambda: config.resolve_dataset_training({"dataset": {"name": "ml", "version": -2}}),
            "dataset.dataset.version",
            "must be >= 0 (0 = newest), got -2",
        ),
        (
            lambda: config.resolve_dataset_training(
                {"dataset": {"name": "ml"}, "like_threshold": float("inf")}
            ),
            "dataset.like_threshold",
            "must be finite, got inf",
        ),
        (
            lambda: config.resolve_dataset_training(
                {"dataset": {"name": "ml"}, "min_likes_per_movie": -1}
            ),
            "dataset.min_likes_per_movie",
            "must be >= 0, got -1",
        ),
        (
            lambda: config.resolve_dataset_training(
                {"dataset": {"name": "ml"}, "holdout_fraction": 1.0}
            ),
            "dataset.holdout_fraction",
            "must be >= 0 and < 1, got 1",
        ),
        (
            lambda: config.resolve_dataset_training({"dataset": {"name": "ml"}, "seed": -1}),
            "dataset.seed",
            "must be in [0, 2^64), got -1",
        ),
    ],
)
def test_every_refusal_names_its_field_and_bound(call, field: str, description: str) -> None:
    with pytest.raises(InvalidArgument) as exc:
        call()
    assert (exc.value.field, exc.value.description) == (field, description)


def test_zero_sizes_are_allowed() -> None:
    spec = config.resolve_synthetic({"num_watchers": 0, "num_movies": 0, "num_types": 0})
    assert (spec.num_watchers, spec.num_movies, spec.num_types) == (0, 0, 0)


def test_random_seeds_spread_over_32_bits() -> None:
    synthetic = [config.resolve_synthetic({}).seed for _ in range(64)]
    dataset = [config.resolve_dataset_training({"dataset": {"name": "m"}}).seed for _ in range(64)]
    for seeds in (synthetic, dataset):
        assert all(0 <= s < 2**32 for s in seeds)
        assert max(seeds) >= 2**31  # fails with probability 2^-64
