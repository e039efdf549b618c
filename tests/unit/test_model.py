"""The Keras model is the notebook's; training reports epochs, cancels; serving equals Keras."""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from movie_embeddings_server import config
from movie_embeddings_server.config import TrainSpec
from movie_embeddings_server.errors import Cancelled
from movie_embeddings_server.model import inference
from movie_embeddings_server.store.models import KERAS_MODEL, Store, new_metadata
from movie_embeddings_server.training import keras_model as training
from movie_embeddings_server.training import synthetic as data

MOVIES = 80
EPOCHS = 3


def _inbound(model: Any, layer_name: str) -> list[str]:
    """Names of the layers feeding `layer_name`, in argument order, from the functional config."""
    (layer,) = [x for x in model.get_config()["layers"] if x["name"] == layer_name]
    (node,) = layer["inbound_nodes"]
    args = node["args"][0]
    tensors = args if isinstance(args, list) else [args]
    return [t["config"]["keras_history"][0] for t in tensors]


def _keras_output(model: Any, ratings: np.ndarray, features: np.ndarray) -> np.ndarray:
    return np.asarray(model([ratings, features], training=False))


def _random_watchers(rng: np.random.Generator, n: int, movies: int) -> inference.Watchers:
    return inference.Watchers(
        ratings=rng.random((n, movies), dtype=np.float32),
        age_years=rng.uniform(15, 90, n).astype(np.float32),
        education=rng.integers(0, 7, n),
    )


def _features(w: inference.Watchers, age_mean: float, age_std: float) -> np.ndarray:
    """What the Keras model takes: standardised age, then education."""
    return np.column_stack(
        [(w.age_years.astype(np.float64) - age_mean) / age_std, w.education]
    ).astype(np.float32)


@pytest.fixture(scope="module")
def tiny_data() -> data.Dataset:
    return data.generate(200, MOVIES, 10, seed=3)


@pytest.fixture(scope="module")
def trained_run(tiny_data: data.Dataset) -> tuple[training.Trained, list[training.Epoch]]:
    seen: list[training.Epoch] = []
    spec = TrainSpec(epochs=EPOCHS, validation_fraction=0.25)
    return training.train(tiny_data, spec, seed=11, on_epoch=seen.append), seen


@pytest.fixture(scope="module")
def notebook_model() -> Any:
    return training.build_model(MOVIES, config.resolve_training({"preset": "notebook"}))


# --- architecture -------------------------------------------------------------------------


def test_embedding_layer_has_400_params_and_no_bias(notebook_model: Any) -> None:
    layer = notebook_model.get_layer("embedding")
    assert layer.use_bias is False
    assert layer.count_params() == 400
    (kernel,) = layer.get_weights()
    assert kernel.shape == (MOVIES, 5)


def test_inputs_are_ratings_then_features(notebook_model: Any) -> None:
    assert [tuple(x.shape) for x in notebook_model.inputs] == [(None, MOVIES), (None, 2)]
    assert [x[0] for x in notebook_model.get_config()["input_layers"]] == ["ratings", "features"]
    assert tuple(notebook_model.output.shape) == (None, MOVIES)


def test_layers_are_connected_as_in_the_notebook(notebook_model: Any) -> None:
    assert _inbound(notebook_model, "embedding") == ["ratings"]
    # concatenate([B, embedding]): the features come first.
    assert _inbound(notebook_model, "merge") == ["features", "embedding"]
    assert _inbound(notebook_model, "hidden") == ["merge"]
    assert _inbound(notebook_model, "output") == ["hidden"]
    outputs = notebook_model.get_config()["output_layers"]
    assert outputs in (["output", 0, 0], [["output", 0, 0]])


def test_dense_layers_sizes_and_activations(notebook_model: Any) -> None:
    hidden = notebook_model.get_layer("hidden")
    output = notebook_model.get_layer("output")
    assert hidden.units == 32
    assert hidden.activation.__name__ == "relu"
    assert hidden.use_bias
    assert [w.shape for w in hidden.get_weights()] == [(2 + 5, 32), (32,)]
    assert output.units == MOVIES
    assert output.activation.__name__ == "sigmoid"
    assert [w.shape for w in output.get_weights()] == [(32, MOVIES), (MOVIES,)]
    assert notebook_model.count_params() == 400 + (7 * 32 + 32) + (32 * MOVIES + MOVIES)


def test_compiled_with_adam_and_binary_crossentropy(notebook_model: Any) -> None:
    assert type(notebook_model.optimizer).__name__ == "Adam"
    assert float(notebook_model.optimizer.learning_rate) == pytest.approx(0.001)  # constant
    assert notebook_model.loss == "binary_crossentropy"


def test_sizes_follow_the_spec() -> None:
    model = training.build_model(13, TrainSpec(embedding_dim=3, hidden_units=7, learning_rate=0.01))
    weights = training.export_weights(model)
    assert weights["embedding"].shape == (13, 3)
    assert weights["hidden_kernel"].shape == (2 + 3, 7)
    assert weights["output_kernel"].shape == (7, 13)
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01)


def test_default_preset_starts_from_a_zero_embedding() -> None:
    layer = training.build_model(MOVIES, config.resolve_training({})).get_layer("embedding")
    assert type(layer.kernel_initializer).__name__ == "Zeros"
    assert not np.any(layer.get_weights()[0])


def test_notebook_preset_uses_glorot_uniform(notebook_model: Any) -> None:
    layer = notebook_model.get_layer("embedding")
    assert type(layer.kernel_initializer).__name__ == "GlorotUniform"
    kernel = layer.get_weights()[0]
    limit = math.sqrt(6 / (MOVIES + 5))
    assert np.all(np.abs(kernel) <= limit)
    assert np.abs(kernel).max() > limit / 2  # glorot noise, not zeros


def test_export_weights_names_and_shapes(notebook_model: Any) -> None:
    weights = training.export_weights(notebook_model)
    assert tuple(weights) == inference.WEIGHT_NAMES
    assert {k: v.shape for k, v in weights.items()} == {
        "embedding": (MOVIES, 5),
        "hidden_kernel": (7, 32),
        "hidden_bias": (32,),
        "output_kernel": (32, MOVIES),
        "output_bias": (MOVIES,),
    }


# --- training -----------------------------------------------------------------------------


def test_on_epoch_is_called_once_per_epoch_in_order(trained_run: Any) -> None:
    trained, seen = trained_run
    assert [e.epoch for e in seen] == list(range(1, EPOCHS + 1))
    assert all(e.epochs == EPOCHS for e in seen)
    assert all(math.isfinite(e.loss) and e.loss > 0 for e in seen)
    assert all(math.isfinite(e.val_loss) for e in seen)  # validation_fraction > 0
    elapsed = [e.elapsed_seconds for e in seen]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0
    assert seen == trained.history


def test_training_lowers_the_loss(trained_run: Any) -> None:
    trained, _ = trained_run
    assert len(trained.history) == EPOCHS
    assert trained.history[-1].loss < trained.history[0].loss


def test_val_loss_is_nan_without_a_validation_split(tiny_data: data.Dataset) -> None:
    seen: list[training.Epoch] = []
    training.train(tiny_data, TrainSpec(epochs=1, batch_size=100), seed=1, on_epoch=seen.append)
    assert len(seen) == 1
    assert math.isnan(seen[0].val_loss)


def test_trained_keeps_the_age_statistics(trained_run: Any, tiny_data: data.Dataset) -> None:
    trained, _ = trained_run
    assert trained.age_mean == pytest.approx(tiny_data.age_years.mean())
    assert trained.age_std == pytest.approx(tiny_data.age_years.std())
    assert trained.age_std > 1


def test_trained_weights_are_the_models(trained_run: Any) -> None:
    trained, _ = trained_run
    fresh = training.export_weights(trained.model)
    for name in inference.WEIGHT_NAMES:
        np.testing.assert_array_equal(trained.weights[name], fresh[name])
    assert np.any(trained.weights["embedding"])  # moved away from the zero initialisation


def test_a_stop_set_before_training_cancels_it(tiny_data: data.Dataset) -> None:
    seen: list[training.Epoch] = []
    stop = training.StopSignal()
    stop.set()
    with pytest.raises(Cancelled):
        training.train(tiny_data, TrainSpec(epochs=2), seed=1, on_epoch=seen.append, stop=stop)
    assert len(seen) <= 1


class _Watched(training.StopSignal):
    """A real StopSignal that keeps the model it stops, so the steps it ran can be counted."""

    model: Any = None

    def attach(self, model: Any) -> None:
        self.model = model
        super().attach(model)


def test_a_stop_set_from_another_thread_lands_within_one_tensorflow_call(
    tiny_data: data.Dataset,
) -> None:
    # Batch 1: 200 steps an epoch, run 32 to a TensorFlow call (the README's bound).
    spec = TrainSpec(epochs=500, batch_size=1)
    assert training.steps_per_execution(200, MOVIES, spec) == 32
    stop = _Watched()
    steps_when_set: list[int] = []

    def set_stop() -> None:
        stop.set()
        # Read just after set: the steps run since are at most those run since the set.
        steps_when_set.append(int(stop.model.optimizer.iterations.numpy()))

    timers: list[threading.Timer] = []

    def on_epoch(epoch: training.Epoch) -> None:
        if epoch.epoch == 2:
            timers.append(threading.Timer(0.05, set_stop))  # from elsewhere, mid-epoch
            timers[0].start()

    with pytest.raises(Cancelled):
        training.train(tiny_data, spec, seed=1, on_epoch=on_epoch, stop=stop)
    timers[0].join(timeout=30)  # the training may end before set_stop has read the count
    ran = int(stop.model.optimizer.iterations.numpy())
    assert 2 * 200 <= steps_when_set[0] <= ran
    assert ran - steps_when_set[0] <= 32, (steps_when_set, ran)
    assert ran % 200 % 32 == 0  # between two calls: 32, 64, ... 192 steps into an epoch


def test_age_stats_of_constant_ages() -> None:
    assert training.age_stats(np.full(10, 30, dtype=np.int16)) == (30.0, 1.0)


# --- numpy serving equals Keras -----------------------------------------------------------


def test_forward_equals_keras_on_the_trained_model(trained_run: Any) -> None:
    trained, _ = trained_run
    served = inference.ServedModel(
        "m", 1, trained.weights, {"age_mean": trained.age_mean, "age_std": trained.age_std}
    )
    w = _random_watchers(np.random.default_rng(0), 257, MOVIES)
    expected = _keras_output(
        trained.model, w.ratings, _features(w, trained.age_mean, trained.age_std)
    )
    got = served.forward(w)
    assert got.shape == (257, MOVIES)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


def test_forward_equals_keras_predict_on_binary_ratings(trained_run: Any) -> None:
    trained, _ = trained_run
    rng = np.random.default_rng(1)
    w = inference.Watchers(
        ratings=(rng.random((64, MOVIES)) < 0.3).astype(np.float32),
        age_years=rng.integers(15, 80, 64).astype(np.float32),
        education=rng.integers(0, 6, 64),
    )
    meta = {"age_mean": trained.age_mean, "age_std": trained.age_std}
    served = inference.ServedModel("m", 1, trained.weights, meta)
    features = _features(w, trained.age_mean, trained.age_std)
    expected = trained.model.predict([w.ratings, features], verbose=0)
    np.testing.assert_allclose(served.forward(w), expected, rtol=0, atol=1e-5)


def test_forward_equals_keras_with_random_weights() -> None:
    # Weights far from a fresh init: logits of both signs, near-saturated outputs, dead relu
    # units. (Much larger weights give logits in the hundreds, where float32 rounding alone
    # differs by more than 1e-5 between any two summation orders.)
    rng = np.random.default_rng(2)
    model = training.build_model(MOVIES, TrainSpec(embedding_dim=6, hidden_units=16))
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    weights = training.export_weights(model)
    meta = {"age_mean": 41.5, "age_std": 13.25}
    served = inference.ServedModel("m", 1, weights, meta)
    w = _random_watchers(rng, 300, MOVIES)
    expected = _keras_output(model, w.ratings, _features(w, 41.5, 13.25))
    got = served.forward(w)
    assert got.min() < 0.01 and got.max() > 0.99
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)


# Keras 3's Variable.__array__ takes no `copy`; numpy 2 warns when model.save converts it.
@pytest.mark.filterwarnings(
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)
def test_saved_version_serves_what_the_saved_keras_model_computes(
    trained_run: Any, tmp_path: Path
) -> None:
    import keras

    trained, _ = trained_run
    meta = new_metadata(
        age_mean=trained.age_mean,
        age_std=trained.age_std,
        synthetic={"num_watchers": 200, "num_movies": MOVIES, "num_types": 10, "seed": 3},
        training={"preset": "default"},
    )
    store = Store(tmp_path)
    store.commit("default", store.stage("default", trained.model, trained.weights, meta))
    fresh = Store(tmp_path)
    assert fresh.load_new() == 1
    served = fresh.resolve("", 0)
    keras_path = tmp_path / "default" / "1" / KERAS_MODEL
    assert keras_path.is_file()
    reloaded = keras.saving.load_model(keras_path)
    w = _random_watchers(np.random.default_rng(3), 50, MOVIES)
    expected = _keras_output(reloaded, w.ratings, _features(w, trained.age_mean, trained.age_std))
    np.testing.assert_allclose(served.forward(w), expected, rtol=0, atol=1e-5)
