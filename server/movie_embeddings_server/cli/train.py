"""`train`: a new model version on generated data or a stored dataset, with live progress."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

import movie_embeddings as me

from .. import config
from .common import (
    UsageError,
    client_command,
    dest,
    eprint,
    finite_float,
    fraction,
    nonnegative_int,
    positive_float,
    positive_int,
    print_json,
    stderr_console,
)
from .models import describe


def _shown(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _preset_default(field: str) -> str:
    """The real default of a training setting: the preset's, per source of data."""
    synthetic = getattr(config.resolve_training({}, source="synthetic"), field)
    dataset = getattr(config.resolve_training({}, source="dataset"), field)
    notebook = getattr(config.resolve_training({"preset": "notebook"}), field)
    text = (
        _shown(synthetic)
        if synthetic == dataset
        else f"{_shown(synthetic)} on generated data, {_shown(dataset)} on a dataset"
    )
    return f"default: {text}; notebook preset {_shown(notebook)}"


@dataclass(frozen=True)
class Option:
    """A flag of one TrainRequest setting; not given, the server's default applies."""

    flag: str
    type: Callable[[str], Any]
    help: str
    default: str  # what the server's default is, for --help

    @property
    def dest(self) -> str:
        return dest(self.flag)

    def add_to(self, group: Any, **kwargs: Any) -> None:
        text = f"{self.help} ({self.default})"
        group.add_argument(self.flag, type=self.type, default=None, help=text, **kwargs)


def _generated(flag: str, kind: Callable[[str], Any], text: str) -> Option:
    return Option(flag, kind, text, f"default: {getattr(config.SyntheticSpec(), dest(flag))}")


def _from_dataset(flag: str, kind: Callable[[str], Any], text: str) -> Option:
    value = getattr(config.DatasetTrainingSpec(), dest(flag))
    return Option(flag, kind, text, f"default: {_shown(value)}")


def _training(flag: str, kind: Callable[[str], Any], text: str) -> Option:
    return Option(flag, kind, text, _preset_default(dest(flag)))


SYNTHETIC_OPTIONS = [
    _generated("--num-watchers", positive_int, "watchers to generate"),
    _generated("--num-movies", positive_int, "movies in the catalogue"),
    _generated("--num-types", positive_int, "watcher types = movie groups"),
]
DATASET_OPTIONS = [
    _from_dataset("--like-threshold", finite_float, "a rating >= it is a like"),
    _from_dataset(
        "--min-likes-per-watcher", nonnegative_int, "watchers with fewer likes are left out"
    ),
    _from_dataset(
        "--min-likes-per-movie",
        nonnegative_int,
        "movies with fewer likes (among the kept watchers) are left out of the catalogue",
    ),
    _from_dataset(
        "--holdout-fraction",
        fraction,
        "share of the kept watchers never trained on, kept to measure recommendations",
    ),
]
INITIALIZER = _training(
    "--embedding-initializer",
    str,
    f"Keras initialiser of the embedding kernel: {', '.join(config.INITIALIZERS)}",
)
TRAINING_OPTIONS = [
    _training("--embedding-dim", positive_int, "length of a movie vector"),
    _training("--hidden-units", positive_int, "units of the hidden relu layer"),
    _training(
        "--epochs", positive_int, "passes over the data (at most; see --early-stopping-patience)"
    ),
    _training(
        "--batch-size",
        positive_int,
        "watchers per gradient step (unset, on a dataset: grows in steps of 64 to keep an "
        "epoch within 600 steps)",
    ),
    _training("--learning-rate", positive_float, "Adam's (initial) learning rate"),
    _training(
        "--validation-fraction",
        fraction,
        "share of the training watchers used for val_loss (and, on a dataset, for validation "
        "NDCG@100)",
    ),
    _training("--embedding-l2", finite_float, "L2 penalty on the embedding kernel"),
    _training(
        "--early-stopping-patience",
        nonnegative_int,
        "epochs without a better val_loss (on a dataset: validation NDCG@100) before stopping "
        "and restoring the best weights; 0 = off",
    ),
    _training("--input-dropout", fraction, "dropout rate on the ratings input during training"),
]


def progress_line(p: me.TrainProgress) -> str:
    val = "" if p.val_loss is None else f" val_loss {p.val_loss:.4f}"
    left = f", at most ~{p.run_seconds_left:.0f}s left" if p.epoch < p.epochs else ""
    return f"epoch {p.epoch}/{p.epochs} loss {p.loss:.4f}{val} {p.elapsed_seconds:.1f}s{left}"


def _clock(seconds: float) -> str:
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{seconds:02d}"


def _epoch_ended(p: me.TrainProgress) -> bool:
    return p.steps == 0 or p.step >= p.steps  # 0 steps: a server that reports epochs only


@contextmanager
def progress_display() -> Iterator[Callable[[me.TrainProgress], None]]:
    """A function showing each TrainProgress: live bars by epoch and by step on a terminal,
    else one plain line per finished epoch (for logs and tests)."""
    console = stderr_console()
    if not console.is_terminal:
        yield lambda p: eprint(progress_line(p)) if _epoch_ended(p) else None
        return
    columns = (
        TextColumn("{task.description:>5}"),
        BarColumn(),
        TextColumn("{task.fields[count]}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[left]}"),
        TextColumn("{task.fields[loss]}"),
    )
    with Progress(*columns, console=console) as bars:
        epochs = bars.add_task("epoch", total=None, count="", loss="", left="")
        steps = bars.add_task("step", total=None, count="", loss="", left="", visible=False)

        current = [0]

        def show(p: me.TrainProgress) -> None:
            if p.epoch != current[0]:  # a new epoch: its step bar (and clock) start over
                current[0] = p.epoch
                bars.reset(steps, total=p.steps, visible=p.steps > 0)
            done = p.epoch - 1 + (p.step / p.steps if p.steps else 1)
            loss = f"loss {p.loss:.4f}" + ("" if p.val_loss is None else f" val {p.val_loss:.4f}")
            count = f"{p.epoch}/{p.epochs}"
            # The server's estimates: the run's to its epoch limit, this epoch's.
            left = f"≤ {_clock(p.run_seconds_left)} left"
            bars.update(epochs, total=p.epochs, completed=done, count=count, loss=loss, left=left)
            count, left = f"{p.step:,}/{p.steps:,}", f"{_clock(p.epoch_seconds_left)} left"
            bars.update(
                steps, total=p.steps, completed=p.step, count=count, left=left, visible=p.steps > 0
            )
            if _epoch_ended(p):
                bars.console.print(progress_line(p), markup=False, soft_wrap=True)

        yield show


def _given(args: argparse.Namespace, options: list[Option]) -> list[str]:
    return [option.flag for option in options if getattr(args, option.dest) is not None]


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainRequest settings the command line gives; the rest are the server's defaults."""
    synthetic = _given(args, SYNTHETIC_OPTIONS)
    dataset = _given(args, DATASET_OPTIONS) + (
        ["--dataset-version"] if args.dataset_version else []
    )
    if args.dataset is None and dataset:
        raise UsageError(f"train: {dataset[0]} needs --dataset")
    if args.dataset is not None and synthetic:
        raise UsageError(f"train: {synthetic[0]} is for generated data, not --dataset")
    options = [INITIALIZER, *TRAINING_OPTIONS, *SYNTHETIC_OPTIONS, *DATASET_OPTIONS]
    names = [option.dest for option in options]
    names += ["seed", "preset", "learning_rate_schedule"]
    settings = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.dataset is not None:
        settings["dataset"] = me.DatasetRef(args.dataset, args.dataset_version)
    return settings


def resolved_settings(info: me.ModelInfo, given: dict[str, Any]) -> str:
    """Every setting the version was trained with, as the server resolved them: those the
    command line gave, and those the preset (or the server, a seed) filled in."""
    data: Any = info.synthetic or info.dataset
    values = {**asdict(info.training), **{f.name: getattr(data, f.name) for f in fields(data)}}
    values.pop("dataset", None)  # named in the summary line
    shown = {name: _shown(value) for name, value in values.items()}
    filled = ", ".join(f"{k} {v}" for k, v in shown.items() if k not in {*given, "preset"})
    passed = ", ".join(f"{k} {v}" for k, v in shown.items() if k in given)
    return f"  given: {passed or 'nothing'}\n  filled in by preset {info.training.preset}: {filled}"


def _report(events: Iterable[me.TrainProgress | me.ModelInfo], args: argparse.Namespace) -> int:
    """Show the progress, then the new version (with every setting it was trained with)."""
    info: me.ModelInfo | None = None
    try:
        with progress_display() as show:
            for event in events:
                if isinstance(event, me.TrainProgress):
                    show(event)
                else:
                    info = event
    except KeyboardInterrupt:
        if info is None:  # else the version was stored before the interrupt: report it
            eprint("cancelled; no version stored")
            return 130
    if info is None:
        raise me.ServerError("the Train stream ended without a model")
    if args.json:
        print_json(info)
    else:
        print(f"trained {describe(info)}")
        print(resolved_settings(info, _settings(args)))
    return 0


def cmd_train(client: me.Client, args: argparse.Namespace) -> int:
    # Ctrl-C: the channel closes as the command ends, which cancels the Train.
    return _report(client.train(args.model, timeout=args.timeout, **_settings(args)), args)


def _specs(
    settings: dict[str, Any], store: Path
) -> tuple[config.SyntheticSpec | config.DatasetTrainingSpec, config.TrainSpec]:
    """What a Train request with these settings resolves to on a server on `store`."""
    from ..store.datasets import DatasetStore

    training = {f.name for f in fields(config.TrainSpec)}
    spec_of = {k: v for k, v in settings.items() if k in training}
    given = {k: v for k, v in settings.items() if k not in training and k != "dataset"}
    if (ref := settings.get("dataset")) is None:
        synthetic = config.resolve_synthetic(given)
        spec = config.resolve_training(spec_of)
        config.check_split(synthetic, spec)
        return synthetic, spec
    source = config.resolve_dataset_training(given | {"dataset": asdict(ref)})
    datasets = DatasetStore(store)
    datasets.load_new()
    info = datasets.resolve(source.dataset.name, source.dataset.version, "dataset.dataset")
    source = replace(source, dataset=config.DatasetRef(info["name"], info["version"]))
    return source, config.resolve_training(spec_of, source="dataset")


def _trained_in_store(args: argparse.Namespace) -> Iterator[me.TrainProgress | me.ModelInfo]:
    """The events of a training run here, in a trainer process as a server runs it, and
    committed to the store as a server commits (the same lock and rename)."""
    import grpc

    from movie_embeddings import _convert as convert
    from movie_embeddings.v1 import movie_embeddings_pb2 as pb

    from ..errors import ServiceError
    from ..model.inference import ServedModel
    from ..serving.model_rpcs import model_info
    from ..serving.rpc import status_of
    from ..serving.trainer import Trainer
    from ..store.models import Store, check_name

    trainer = None
    try:
        name = check_name("model_name", args.model)
        source, spec = _specs(_settings(args), args.store)
        trainer = Trainer(Store(args.store))
        for event in trainer.start(name, source, spec, wait=True):
            if isinstance(event, ServedModel):
                yield convert.model_info(model_info(event))
            else:
                yield convert.progress(pb.TrainProgress(**asdict(event)))
    except ServiceError as exc:  # refused as a server would refuse the request
        code = status_of(exc)
        raise me.ERROR_FOR_CODE[code](str(exc), code) from exc
    except RuntimeError as exc:  # the trainer process failed; its log is on stderr
        raise me.ServerError(str(exc), grpc.StatusCode.INTERNAL) from exc
    finally:
        if trainer:
            trainer.close()  # a cancelled (Ctrl-C) training is stopped, nothing stored


def cmd_train_in_store(args: argparse.Namespace) -> int:
    try:  # a missing store is made, as `serve` makes its --data-dir
        args.store.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file in the way, no permission
        raise UsageError(f"train: --store {args.store}: {exc.strerror or exc}") from exc
    return _report(_trained_in_store(args), args)


class _InStore(argparse.Action):
    """--store DIR: the training runs here, with no server to call."""

    def __call__(self, parser: Any, namespace: Any, values: Any, option: Any = None) -> None:
        namespace.store = Path(values)
        namespace.connect = False
        namespace.handler = cmd_train_in_store


def _data_options(train: argparse.ArgumentParser) -> None:
    generated = train.add_argument_group(
        "generated data", "the notebook's synthetic watchers (the default source)"
    )
    for option in SYNTHETIC_OPTIONS:
        option.add_to(generated)
    stored = train.add_argument_group("a stored dataset", "train on an imported dataset instead")
    stored.add_argument("--dataset", default=None, help="name of the dataset to train on")
    stored.add_argument(
        "--dataset-version",
        type=nonnegative_int,
        default=0,
        help="its version; 0 = newest (default: %(default)s)",
    )
    for option in DATASET_OPTIONS:
        option.add_to(stored)
    train.add_argument(
        "--seed",
        type=nonnegative_int,
        default=None,
        help="seed of the generator, or of a dataset's held-out split, and of the training "
        "(default: random, recorded in the model)",
    )


def add_commands(sub: Any) -> None:
    train = client_command(
        sub,
        "train",
        cmd_train,
        help="train a new model version, with a progress bar",
        description="Train a new version of a model on freshly generated synthetic data or on "
        "an imported dataset (--dataset), with live progress, then print its metrics and every "
        "setting it was trained with: those given, and those the preset filled in (read from "
        "the stored version once trained). Options not given take the preset's values, which "
        "depend on the data.",
    )
    train.add_argument(
        "--model", default="default", help="model name to add a version to (default: %(default)s)"
    )
    train.add_argument(
        "--store",
        action=_InStore,
        metavar="DIR",
        default=None,
        help="train here, with no server, into the store at DIR (a server's --data-dir): the "
        "version is committed as a server commits it, and the servers sharing DIR load it at "
        "their next poll (e.g. a Kubernetes Job beside the replicas); the connection options "
        "are then unused",
    )
    _data_options(train)
    settings = train.add_argument_group("training", "how to train; the preset fills the rest")
    settings.add_argument(
        "--preset",
        choices=config.PRESETS,
        default=None,
        help="base settings: the improved default (per source of data), or the notebook's "
        "exactly (default: default)",
    )
    for option in TRAINING_OPTIONS:
        option.add_to(settings)
    INITIALIZER.add_to(settings, choices=config.INITIALIZERS, metavar="NAME")
    settings.add_argument(
        "--learning-rate-schedule",
        choices=config.SCHEDULES,
        default=None,
        help="learning rate throughout, or decayed to 0 along a half cosine "
        f"({_preset_default('learning_rate_schedule')})",
    )
