"""The SDK's dataset calls against a real in-process server: files read by
movie_embeddings.datasets, imported by Client and AsyncClient, listed, trained on, searched
by title, deleted; refusals arrive as the SDK's exceptions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

import movie_embeddings as me
from movie_embeddings.datasets import read_movielens

TITLES = {
    1: "Toy Story (1995)",
    11: "American President, The (1995)",
    73: "Misérables, Les (1995)",
    2000: '"Great Performances" Cats (1998)',
}


def _movielens(directory: Path, watchers: int = 40, movies: int = 30) -> Path:
    """A small ml-latest-style directory: two taste groups of watchers (even / odd movies),
    quoted titles with commas, quotes and accents."""
    rng = np.random.default_rng(0)
    ids = [1, 11, 73, 2000, *range(3000, 3000 + movies - 4)]
    rows = []
    for w in range(1, watchers + 1):
        for i, movie in enumerate(ids):
            if rng.random() < 0.6:
                liked = i % 2 == w % 2
                rows.append(f"{w},{movie},{rng.choice([4.0, 5.0] if liked else [1.0, 2.5])},{w}")
    directory.mkdir()
    (directory / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n" + "\n".join(rows) + "\n"
    )
    lines = [f"{m},{_quoted(TITLES.get(m, f'Movie {m} (2000)'))},Drama|War" for m in ids]
    (directory / "movies.csv").write_text(
        "movieId,title,genres\n" + "\n".join(lines) + "\n", encoding="utf-8"
    )
    return directory


def _quoted(title: str) -> str:
    return '"' + title.replace('"', '""') + '"'


def test_import_list_get_and_delete(inproc, tmp_path: Path) -> None:
    data = read_movielens(_movielens(tmp_path / "ml"))
    seen: list[tuple[int, int]] = []
    with me.Client(inproc.target) as client:
        info = client.import_dataset(
            "sdk-ml",
            data,
            description="written by a test",
            chunk_rows=100,
            progress=lambda sent, total: seen.append((sent, total)),
        )
        assert info.ref == me.DatasetRef("sdk-ml", 1)
        assert info.num_ratings == len(data.ratings)
        assert (info.num_watchers, info.num_movies, info.num_titled_movies) == (40, 30, 30)
        assert (info.min_rating, info.max_rating) == (1.0, 5.0)
        assert (info.has_age, info.has_education) == (False, False)
        assert info.description == "written by a test"
        assert info.size_bytes > 0
        total = len(data.ratings) + 30
        assert seen[-1] == (total, total)

        assert client.get_dataset("sdk-ml") == info
        assert client.get_dataset("sdk-ml", 1) == info
        again = client.import_dataset("sdk-ml", data)
        assert again.version == 2
        assert client.list_datasets("sdk-ml") == [info, again]
        assert client.delete_dataset("sdk-ml", 1) == [info]
        with pytest.raises(me.NotFound):
            client.get_dataset("sdk-ml", 1)
        assert client.delete_dataset("sdk-ml") == [again]
        assert client.list_datasets("sdk-ml") == []


def test_a_bad_row_is_invalid_argument_and_stores_nothing(inproc) -> None:
    ratings = {"watcher_id": [1, 2, 3], "movie_id": [1, -5, 2], "rating": [4.0, 4.0, 4.0]}
    with me.Client(inproc.target) as client:
        with pytest.raises(me.InvalidArgument) as caught:
            client.import_dataset("sdk-bad", ratings)
        field, _ = caught.value.field_violations[0]
        assert field.startswith("chunks[1].ratings.movie_ids[1]")
        assert client.list_datasets("sdk-bad") == []


def test_train_on_a_dataset_then_search_and_query_by_title(inproc, tmp_path: Path) -> None:
    data = read_movielens(_movielens(tmp_path / "ml"))
    with me.Client(inproc.target) as client:
        client.import_dataset("sdk-train", data)
        events = list(
            client.train(
                "sdk-train", dataset="sdk-train", epochs=2, min_likes_per_watcher=1, seed=3
            )
        )
        info = events[-1]
        assert isinstance(info, me.ModelInfo)
        assert all(isinstance(e, me.TrainProgress) for e in events[:-1])
        assert info.synthetic is None
        assert info.dataset is not None and info.dataset.dataset == me.DatasetRef("sdk-train", 1)
        assert (info.dataset.min_likes_per_watcher, info.dataset.seed) == (1, 3)
        assert info.dataset_info is not None and info.dataset_info.name == "sdk-train"
        assert info.num_train_watchers + info.num_heldout_watchers == 40
        assert not info.has_age and not info.has_education

        found = client.search_movies("miserables", model="sdk-train")
        assert [(m.movie_id, m.title, m.genres) for m in found] == [
            (73, "Misérables, Les (1995)", ("Drama", "War"))
        ]
        neighbors = client.nearest_movies(73, k=3, model="sdk-train")
        assert all(n.title for n in neighbors)
        r = client.reconstruct([1, 73], age_years=0, education=0, top_k=3, model="sdk-train")
        assert {x.movie_id for x in r.recommendations}.isdisjoint({1, 73})
        assert all(x.title for x in r.recommendations)


def test_async_client(inproc) -> None:
    ratings = {"watcher_id": [1, 1, 2], "movie_id": [5, 6, 5], "rating": [1.0, 2.0, 3.0]}
    movies = {"movie_id": [5, 6], "title": ["Five", "Six"]}
    watchers = {"watcher_id": [1, 2], "age": [30.0, np.nan]}

    async def main() -> None:
        async with me.AsyncClient(inproc.target) as client:
            info = await client.import_dataset(
                "sdk-async", ratings, movies=movies, watchers=watchers
            )
            assert (info.num_ratings, info.num_movies, info.num_titled_movies) == (3, 2, 2)
            assert info.has_age and not info.has_education
            assert await client.get_dataset(me.DatasetRef("sdk-async")) == info
            assert await client.list_datasets("sdk-async") == [info]
            assert await client.delete_dataset("sdk-async") == [info]

    asyncio.run(main())
