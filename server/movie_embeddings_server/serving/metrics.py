"""Prometheus metrics, served over HTTP with --metrics-port: calls by RPC and status code,
their latency by RPC, trainings by outcome, the rows of each gathered pass, and the versions
the store serves."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from ..store.models import Store

# Seconds: queries take 0.1-10 ms, a Train from seconds to minutes.
BUCKETS = [1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5]
BUCKETS += [1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0]


class _Served(Collector):
    """Read from the store at each scrape: nothing to keep in step."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[GaugeMetricFamily]:
        versions = self._store.list()
        newest = GaugeMetricFamily(
            "movie_embeddings_model_newest_version",
            "Newest version of each model (what a query without a version reads)",
            labels=["model"],
        )
        for served in versions:  # sorted by name then version: the last one per name wins
            newest.add_metric([served.name], served.version)
        yield newest
        yield GaugeMetricFamily(
            "movie_embeddings_versions_loaded",
            "Model versions loaded and served",
            value=len(versions),
        )


class Metrics:
    """The server's metrics in a registry of their own (several servers may share a process)."""

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "movie_embeddings_requests",
            "RPCs handled, by method and status code",
            ["rpc", "code"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "movie_embeddings_request_seconds",
            "Time to handle an RPC (a Train: its whole stream), by method",
            ["rpc"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self._trainings = Counter(
            "movie_embeddings_trainings",
            "Trainings by outcome: started, finished, cancelled or failed",
            ["outcome"],
            registry=self.registry,
        )
        self._gathered = Histogram(
            "movie_embeddings_gathered_rows",
            "Rows answered by one pass over a model's layer, by what the pass computes "
            "(reconstruct: watchers by the output layer; nearest: query vectors by the "
            "embedding): concurrent calls gathered (--batch-wait-us)",
            ["pass"],
            buckets=[1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128],
            registry=self.registry,
        )
        self.registry.register(_Served(store))

    def call(self, rpc: str, code: str, seconds: float) -> None:
        self._requests.labels(rpc, code).inc()
        self._latency.labels(rpc).observe(seconds)

    def gathered(self, what: str, rows: int) -> None:
        self._gathered.labels(what).observe(rows)

    def training(self, outcome: str) -> None:
        self._trainings.labels(outcome).inc()

    def serve(self, host: str, port: int) -> Any:
        """Serve /metrics over HTTP on a thread; returns the HTTP server (its port is known)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server
