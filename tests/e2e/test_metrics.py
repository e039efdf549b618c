"""Prometheus metrics of a real server process, scraped over HTTP after known calls."""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path

import pytest
from conftest import ServerProcess, copy_store, start_server, wait_until
from prometheus_client.parser import text_string_to_metric_families

import movie_embeddings as me


def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as reply:
        text = reply.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_count_calls_trainings_and_versions(server: ServerProcess, tmp_path: Path) -> None:
    data = copy_store(server, tmp_path / "data")
    proc = start_server(data, tmp_path / "server.log", "--metrics-port", "0")
    try:
        port = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", proc.log_text())
        assert port, proc.log_text()
        url = f"http://127.0.0.1:{port.group(1)}/metrics"
        with me.Client(proc.target) as client:
            for movie in (1, 2, 3):
                client.movie_vector(movie)
            with pytest.raises(me.NotFound):
                client.movie_vector(999)
            client.nearest_movies(1, k=3)
            client.reconstruct([1, 2], age_years=30, education=1, top_k=3, probabilities=False)
            list(client.train("counted", num_watchers=100, epochs=1, seed=1))
            stream = client.train("left", num_watchers=20_000, epochs=50, seed=1)
            next(stream)
            stream.close()  # cancelled
            default_version = client.get_model().ref.version
        cancelled = ("movie_embeddings_trainings_total", (("outcome", "cancelled"),))
        got = wait_until(  # the cancelled training's outcome lands once its process stops
            lambda: (scraped := _scrape(url)).get(cancelled) and scraped,
            10,
            "the cancelled training counted",
        )
        requests = "movie_embeddings_requests_total"
        assert got[(requests, (("code", "OK"), ("rpc", "GetMovieVector")))] == 3
        assert got[(requests, (("code", "NOT_FOUND"), ("rpc", "GetMovieVector")))] == 1
        assert got[(requests, (("code", "OK"), ("rpc", "NearestMovies")))] == 1
        assert got[(requests, (("code", "OK"), ("rpc", "Train")))] == 1
        assert got[("movie_embeddings_request_seconds_count", (("rpc", "GetMovieVector"),))] == 4
        bucket = ("movie_embeddings_request_seconds_bucket", (("le", "+Inf"), ("rpc", "Train")))
        assert got[bucket] == 2
        trainings = "movie_embeddings_trainings_total"
        assert got[(trainings, (("outcome", "started"),))] == 2
        assert got[(trainings, (("outcome", "finished"),))] == 1
        assert got[(trainings, (("outcome", "cancelled"),))] == 1
        assert (trainings, (("outcome", "failed"),)) not in got
        # The Reconstruct alone: one pass of one row (the server gathers by default).
        gathered = "movie_embeddings_gathered_rows"
        assert got[(f"{gathered}_count", (("pass", "reconstruct"),))] == 1
        assert got[(f"{gathered}_sum", (("pass", "reconstruct"),))] == 1
        newest = "movie_embeddings_model_newest_version"
        assert got[(newest, (("model", "counted"),))] == 1
        assert got[(newest, (("model", "default"),))] == default_version
        loaded = got[("movie_embeddings_versions_loaded", ())]
        assert loaded == len(list((data / "default").glob("[0-9]*"))) + 1
    finally:
        assert proc.stop() == 0
