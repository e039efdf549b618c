"""Builds and runs the gRPC server: service, health, reflection, and a default model at start."""

from __future__ import annotations

import errno
import logging
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import threadpoolctl
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from movie_embeddings.v1 import movie_embeddings_pb2 as pb
from movie_embeddings.v1 import movie_embeddings_pb2_grpc as pb_grpc

from .. import config
from ..errors import Cancelled
from ..jobs import Epoch
from ..store.datasets import DatasetStore
from ..store.models import Store
from .batching import Gatherer
from .malloc import reuse_freed_memory
from .metrics import Metrics
from .security import TokenAuth, server_credentials
from .servicer import MovieEmbeddingServicer
from .trainer import Trainer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["MovieEmbeddingService"].full_name
# The calls that write to the store: with an auth token they need it even without auth_all.
WRITE_METHODS = frozenset(
    f"/{SERVICE_NAME}/{name}"
    for name in ("Train", "ImportDataset", "DeleteDataset", "DeleteModel", "SetModelLabel")
)
# Handler threads beyond one per core: calls waiting to share a pass hold a thread each while
# they wait (no CPU); 8 let 8 callers share one, as benchmarks/floor_bench.py measures.
GATHERING_WORKERS = 8
BOOTSTRAP_SEED = 42  # the default model a newcomer gets is the same on every machine


@dataclass(frozen=True)
class ServerConfig:
    """Everything `serve` can be told on its command line."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 50051
    # None: one per core, one per allowed training, and (when gathering) GATHERING_WORKERS
    # more, so that concurrent queries can wait together for one pass.
    max_workers: int | None = None
    max_concurrent_trains: int = 1
    limits: config.Limits = field(default_factory=config.Limits)
    grace_seconds: float = 5.0
    max_message_bytes: int = 4 * 2**20  # each way; gRPC's own default for what it receives
    # Concurrent Reconstruct calls (and NearestMovies by a vector by cosine) on one version are
    # gathered for up to this long into one pass over its layer (0: never), up to
    # max_batch_rows rows a pass. Once a version has been called alone, a lone call does not
    # wait (batching.py); 5 ms lets 8 callers' next calls, a round trip after their answers,
    # meet in one pass (docs/speed.md).
    batch_wait_us: int = 5000
    max_batch_rows: int = 32
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None  # given: mutual TLS, clients need a certificate it signed
    auth_token: str | None = None  # given: WRITE_METHODS need `authorization: Bearer <token>`
    auth_all: bool = False  # and so does every RPC of the service (health, reflection stay open)
    access_log: bool = False  # a log line for every call, not only for failed ones
    metrics_port: int | None = None  # given: Prometheus metrics on http://host:port/metrics
    poll_seconds: float = 2.0  # how often the store is read for versions other processes wrote
    server_id: str = ""  # sent as `server-id` trailing metadata; "" = HOSTNAME-PID
    max_dataset_ratings: int = 50_000_000  # rating rows one ImportDataset may send
    max_concurrent_imports: int = 1  # ImportDataset calls at once; more: RESOURCE_EXHAUSTED
    keep_versions: int | None = None  # newest unlabelled versions kept per model; None = all


@dataclass
class Running:
    """A started server and the parts a caller may need."""

    server: grpc.Server
    port: int
    store: Store
    datasets: DatasetStore
    trainer: Trainer
    health: health.HealthServicer
    metrics_http: Any = None  # the HTTP server of /metrics, when on
    stopping: threading.Event = field(default_factory=threading.Event)

    def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            self.health.set(service, status)

    def poll(self, seconds: float) -> None:
        """Load, every `seconds`, the versions other processes (replicas) add to the store."""

        def loop() -> None:
            while not self.stopping.wait(seconds):
                try:
                    if loaded := self.store.load_new():  # and forgets the deleted ones
                        log.info("loaded %d new version(s) written by another process", loaded)
                        self.set_serving(True)
                    if added := self.datasets.load_new():
                        log.info("found %d new dataset version(s) stored by another process", added)
                except Exception:  # e.g. a shared filesystem briefly away: try again later
                    log.exception("reading the model or dataset store failed")

        threading.Thread(target=loop, name="store-poll", daemon=True).start()

    def stop(self, grace: float | None) -> None:
        """NOT_SERVING, refuse new calls, cancel trainings, let calls finish within `grace`."""
        self.stopping.set()
        self.set_serving(False)
        stopped = self.server.stop(grace)  # refuses new calls from now on
        self.trainer.close()  # a running Train ends CANCELLED, its version unwritten
        stopped.wait()
        if self.metrics_http:
            self.metrics_http.shutdown()
            self.metrics_http.server_close()


def _check_free(host: str, port: int) -> None:
    """Raise OSError("port N is in use") when another program listens on it (gRPC's own
    error says only that it failed to bind)."""
    if port == 0:
        return
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise OSError(errno.EADDRINUSE, f"port {port} is in use") from exc
        # anything else (an address not of this machine, ...) is for gRPC's bind to report


def create_server(cfg: ServerConfig) -> tuple[grpc.Server, Running]:
    """Load the store and bind the server (not started); NOT_SERVING until a model is ready."""
    # One BLAS thread per call: a query's products are small, and OpenBLAS spreading each over
    # both cores made one Reconstruct over 6,298 movies 25x slower (15 ms against 0.6 ms) on
    # a busy machine; concurrent calls use the cores instead.
    threadpoolctl.threadpool_limits(1, user_api="blas")
    reuse_freed_memory()
    store = Store(cfg.data_dir, cfg.keep_versions)
    loaded = store.load_new()
    log.info("loaded %d model version(s) from %s", loaded, cfg.data_dir)
    datasets = DatasetStore(cfg.data_dir)
    log.info("found %d dataset version(s)", datasets.load_new())
    metrics = Metrics(store) if cfg.metrics_port is not None else None
    trainer = Trainer(store, cfg.max_concurrent_trains, metrics.training if metrics else None)
    # Threads, not grpc.aio: a bare asyncio server answered ~1.25x slower than a threaded one
    # here (benchmarks/serve_bench.py). Few threads: handlers hold the GIL, and 16 workers
    # contending for it gave ~0.7x a bare server's throughput with 8 callers, one per core
    # ~1.0-1.2x. A Train stream holds its worker while it waits, hence one more per training.
    workers = cfg.max_workers or (
        (os.cpu_count() or 1)
        + cfg.max_concurrent_trains
        + (GATHERING_WORKERS if cfg.batch_wait_us else 0)
    )
    interceptors: list[grpc.ServerInterceptor] = []
    if cfg.auth_token:
        guarded = (lambda _: True) if cfg.auth_all else (lambda m: m in WRITE_METHODS)
        interceptors.append(TokenAuth(cfg.auth_token, guarded))
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        interceptors=interceptors,
        options=[
            ("grpc.max_receive_message_length", cfg.max_message_bytes),
            ("grpc.max_send_message_length", cfg.max_message_bytes),
            # gRPC sets SO_REUSEPORT by default: a second server on a busy port would then
            # bind too, and the kernel would split calls between two stores.
            ("grpc.so_reuseport", 0),
        ],
    )
    pb_grpc.add_MovieEmbeddingServiceServicer_to_server(
        MovieEmbeddingServicer(
            store,
            trainer,
            cfg.limits,
            cfg.access_log,
            metrics,
            cfg.server_id or f"{socket.gethostname()}-{os.getpid()}",
            datasets=datasets,
            max_dataset_ratings=cfg.max_dataset_ratings,
            max_concurrent_imports=cfg.max_concurrent_imports,
            gatherer=Gatherer(
                cfg.batch_wait_us / 1e6, cfg.max_batch_rows, metrics.gathered if metrics else None
            ),
        ),
        server,
    )
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{cfg.host}:{cfg.port}"
    _check_free(cfg.host, cfg.port)
    try:
        if cfg.tls_cert and cfg.tls_key:
            port = server.add_secure_port(
                address, server_credentials(cfg.tls_cert, cfg.tls_key, cfg.tls_client_ca)
            )
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:  # grpcio raises "Failed to bind" rather than returning 0
        port = 0
    if port == 0:
        raise OSError(f"cannot listen on {address}: not an address of this machine")
    running = Running(server, port, store, datasets, trainer, health_servicer)
    if metrics and cfg.metrics_port is not None:
        running.metrics_http = metrics.serve(cfg.host, cfg.metrics_port)
        log.info("metrics on http://%s:%d/metrics", cfg.host, running.metrics_http.server_port)
    running.set_serving(not store.is_empty())
    return server, running


class FirstModel:
    """The default model's training at start: what a query that comes first is told."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last: tuple[Epoch, float] | None = None  # the newest event and when it came

    def progress(self, e: Epoch) -> None:
        log.info("default model: epoch %d/%d loss %.4f", e.epoch, e.epochs, e.loss)
        self.last = (e, time.monotonic())  # one assignment: the query threads read it whole

    def not_ready(self) -> str:
        """When it will be ready, from the time its epochs took so far."""
        what = "the default model is being trained"
        e, at = self.last or (None, 0.0)
        done = e.epoch - 1 + (e.step / e.steps if e.steps else 1) if e else 0.0
        if e is None or done <= 0:  # no step taken yet: nothing to estimate from
            waited = time.monotonic() - self.started
            return f"{what}; starting ({waited:.0f} s so far), ready in a few seconds"
        left = e.elapsed_seconds / done * (e.epochs - done) - (time.monotonic() - at)
        return f"{what}; ready in about {max(1, math.ceil(left))} s (epoch {e.epoch}/{e.epochs})"


def bootstrap(running: Running) -> None:
    """Train the seeded `default` model when the store is empty, logging each epoch. Of
    several replicas starting on one empty store, one trains it; the others load it."""
    store = running.store
    with store.exclusive("bootstrap") as mine:
        if store.is_empty() and not (mine and store.load_new()):
            if not mine:
                log.info("another process is training the default model: serving once stored")
                store.not_ready = lambda: (
                    "the default model is being trained by another process sharing the "
                    "store; ready once it is stored"
                )
                return  # the store poll loads it, and turns health SERVING
            log.info("empty model store: training the default model (seed %d)", BOOTSTRAP_SEED)
            synthetic = config.resolve_synthetic({"seed": BOOTSTRAP_SEED})
            first = FirstModel()
            store.not_ready = first.not_ready
            served = running.trainer.train(
                config.DEFAULT_MODEL, synthetic, config.resolve_training({}), first.progress
            )
            log.info("default model v%d ready", served.version)
    running.set_serving(True)


def _on_signal(received: list[int]) -> Callable[[int, Any], None]:
    """A handler that only records the signal: Python runs it between two bytecodes of the
    main thread, which may hold any lock (an Event's, logging's), so it takes none and writes
    nothing. A second signal means "now": the process ends at once, 0 for SIGTERM and 130
    for a second Ctrl-C, as servers usually do."""

    def handle(signum: int, _frame: Any) -> None:
        received.append(signum)  # atomic under the GIL; no lock
        if len(received) > 1:
            os._exit(130 if signum == signal.SIGINT else 0)

    return handle


def serve(cfg: ServerConfig) -> None:
    """Run until SIGTERM or SIGINT, then stop within the grace period."""
    started = time.perf_counter()
    received: list[int] = []
    failed: list[BaseException] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal(received))
    server, running = create_server(cfg)
    running.trainer.warm()  # the first Train then need not wait for TensorFlow's import
    server.start()
    log.info("listening on %s:%d", cfg.host, running.port)
    running.poll(cfg.poll_seconds)

    def ready() -> None:
        try:
            bootstrap(running)
            log.info("serving (ready %.1f s after start)", time.perf_counter() - started)
        except Cancelled:
            pass  # stopped by a shutdown
        except BaseException as exc:
            log.exception("could not train the default model")
            failed.append(exc)

    threading.Thread(target=ready, name="bootstrap", daemon=True).start()
    # Short sleeps: a signal the kernel hands to another thread (gRPC's, or the bootstrap's)
    # only runs its Python handler once this thread wakes up.
    while not (received or failed):
        time.sleep(0.1)
    log.info("shutting down (grace %.1f s)", cfg.grace_seconds)
    running.stop(cfg.grace_seconds)
    if failed:
        raise SystemExit(1)
