"""Writes a synthetic dataset with MovieLens-25M's shape and format: ratings.csv and movies.csv.

    python benchmarks/make_movielens_like.py --out DIR [--watchers N] [--movies N]
        [--ratings N] [--groups N] [--seed S]

The defaults are ML-25M's counts: 25,000,095 ratings by 162,541 watchers (userId 1..N, each
with at least 20 ratings) of 59,047 movies (sparse movieIds up to 209,171), ratings 0.5..5.0
in half stars, `ratings.csv` sorted by userId then movieId, `movies.csv` with quoted titles
where they hold commas or quotes, UTF-8 accents, and "A|B" genres. Movie popularity is
Zipf-like and watcher activity log-normal. Every watcher and every movie belongs to one of
`--groups` latent taste groups: a watcher picks and rates its group's movies higher, so a
model's quality on this data is measurable. Watchers are made a chunk at a time (bounded
memory), each chunk vectorised; prints rows/s, file sizes and the shape it made.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

MIN_PER_WATCHER = 20  # as in ML-25M: every user rated at least 20 movies
MAX_SHARE_PER_WATCHER = 0.55  # ML-25M's busiest user rated 32,202 of 59,047 movies
ML25M_ID_SPREAD = 209_171 / 59_047  # ML-25M's largest movieId over its rated movies
ACTIVITY_MU, ACTIVITY_SIGMA = 3.93, 1.39  # log-normal ratings beyond the 20: median ~71, mean ~154
ZIPF_EXPONENT, ZIPF_OFFSET = 1.7, 90  # popularity of the movie of rank r ~ (r + offset)^-exponent
GROUP_BOOST = 5.0  # how much likelier a watcher picks a movie of its own taste group
GROUP_AFFINITY = 0.9  # stars added to a rating of a movie of the watcher's own group
CHUNK_WATCHERS = 16_384
ROUNDS = 8  # with-replacement draw rounds before a watcher falls back to exact top-k sampling
FIRST_TIME, LAST_TIME = 789_652_009, 1_574_327_703  # ML-25M's span: 1995-01-09 to 2019-11-21
STARS = pa.array([f"{s / 2:.1f}" for s in range(1, 11)])  # "0.5" .. "5.0", written as such
RATINGS_SCHEMA = pa.schema(
    [
        ("userId", pa.int32()),
        ("movieId", pa.int32()),
        ("rating", pa.dictionary(pa.int8(), pa.string())),
        ("timestamp", pa.int64()),
    ]
)
GENRES = (  # MovieLens's genres
    "Action|Adventure|Animation|Children|Comedy|Crime|Documentary|Drama|Fantasy|Film-Noir|"
    "Horror|IMAX|Musical|Mystery|Romance|Sci-Fi|Thriller|War|Western"
)
WORDS = (  # title words, some accented
    "Love Night Dark City Last Blue Summer Man Woman Story House Girl Boy King Queen Life Death "
    "Dead Time Day Road Home Game Secret Lost River Star Fire Water Heart Blood Dream Shadow "
    "Return Rise Fall Kingdom Island Winter Money Angel Devil War Moon Sun Ghost Legend Red "
    "Wild Little Big Lonely Strange Perfect Mister Café Amélie Misérables Noël Señor Zoë Über "
    "Bête Garçon Crème Fiancée Déjà Naïve Öl"
)
ARTICLES = ("The", "A", "An", "Les", "La", "Le", "Die", "El")


@dataclass(frozen=True)
class Shape:
    watchers: int
    movies: int
    ratings: int
    groups: int
    seed: int

    def check(self) -> None:
        cap = per_watcher_cap(self.movies)
        if self.movies < MIN_PER_WATCHER or self.groups < 1:
            raise SystemExit(f"need at least {MIN_PER_WATCHER} movies and 1 group")
        if not max(MIN_PER_WATCHER * self.watchers, self.movies) <= self.ratings:
            raise SystemExit(
                f"--ratings must be at least {MIN_PER_WATCHER} per watcher and 1 per movie"
            )
        if self.ratings > cap * self.watchers:
            raise SystemExit(f"--ratings must be at most {cap} per watcher")


ML25M = Shape(watchers=162_541, movies=59_047, ratings=25_000_095, groups=20, seed=0)


def per_watcher_cap(movies: int) -> int:
    return max(MIN_PER_WATCHER, min(movies, int(MAX_SHARE_PER_WATCHER * movies)))


def watcher_counts(rng: np.random.Generator, shape: Shape) -> np.ndarray:
    """Ratings per watcher: 20 + log-normal, capped, summing to exactly shape.ratings."""
    cap = per_watcher_cap(shape.movies)
    extra = rng.lognormal(ACTIVITY_MU, ACTIVITY_SIGMA, shape.watchers)
    extra *= (shape.ratings - MIN_PER_WATCHER * shape.watchers) / extra.sum()
    counts = MIN_PER_WATCHER + np.minimum(extra, cap - MIN_PER_WATCHER).astype(np.int64)
    # Rounding down and the cap leave a remainder: hand it out in proportion to activity.
    for _ in range(100):
        missing = shape.ratings - int(counts.sum())
        if missing == 0:
            return counts
        room = cap - counts
        weights = extra * (room > 0)
        counts += np.minimum(rng.multinomial(missing, weights / weights.sum()), room)
    raise RuntimeError("could not spread the ratings over the watchers")


def top_k(rng: np.random.Generator, log_weights: np.ndarray, k: int) -> np.ndarray:
    """k distinct indices drawn without replacement in proportion to exp(log_weights)."""
    keys = log_weights + rng.gumbel(size=len(log_weights))
    return np.argpartition(keys, len(keys) - k)[len(keys) - k :]


def sparse_movie_ids(rng: np.random.Generator, movies: int) -> np.ndarray:
    """Ascending distinct ids up to movies x ML-25M's spread, dense at the low end as in ML."""
    largest = max(movies, round(movies * ML25M_ID_SPREAD))
    ids = np.arange(1, largest + 1)
    log_weights = -np.log1p(ids / (0.15 * largest))
    log_weights[-1] = np.inf  # the largest id is always taken
    return np.sort(ids[top_k(rng, log_weights, movies)])


@dataclass
class World:
    """Everything fixed before the first chunk: per-watcher and per-movie traits."""

    counts: np.ndarray  # ratings per watcher
    watcher_group: np.ndarray
    watcher_bias: np.ndarray  # stars added to every rating of the watcher
    half_stars: np.ndarray  # bool: rates in half stars (else whole stars)
    first_time: np.ndarray  # int64 seconds: the watcher's first rating
    active_seconds: np.ndarray  # how long the watcher keeps rating
    movie_ids: np.ndarray  # ascending; movie row i is movie_ids[i]
    movie_group: np.ndarray
    movie_quality: np.ndarray  # stars added to every rating of the movie
    log_weights: np.ndarray  # (groups, movies): how a watcher of each group picks movies
    cdf: np.ndarray  # (groups * movies,): group k's cumulative weights, shifted by k
    cover_watcher: np.ndarray  # each movie's one guaranteed rater, ascending
    cover_movie: np.ndarray  # the movie rows, aligned


def make_world(rng: np.random.Generator, shape: Shape) -> World:
    w, m, g = shape.watchers, shape.movies, shape.groups
    counts = watcher_counts(rng, shape)
    rank = rng.permutation(m)
    movie_group = rng.integers(g, size=m)
    weights = (rank + ZIPF_OFFSET) ** -ZIPF_EXPONENT
    by_group = np.where(movie_group == np.arange(g)[:, None], GROUP_BOOST * weights, weights)
    by_group /= by_group.sum(axis=1, keepdims=True)
    # One sorted array for every group's inverse-CDF sampling: u + k lands in group k's part.
    cdf = (np.cumsum(by_group, axis=1) + np.arange(g)[:, None]).ravel()
    # Every movie is rated at least once (as in ML-25M's counts): give each one rating slot,
    # distinct slots so no watcher is given more movies than it rates.
    slots = rng.choice(shape.ratings, size=m, replace=False)
    cover_watcher = np.searchsorted(np.cumsum(counts), slots, side="right")
    order = np.argsort(cover_watcher, kind="stable")
    active_days = np.minimum(rng.lognormal(3.0, 2.0, w), (LAST_TIME - FIRST_TIME) / 86_400)
    active_seconds = (active_days * 86_400).astype(np.int64)
    return World(
        counts=counts,
        watcher_group=rng.integers(g, size=w),
        watcher_bias=rng.normal(0.0, 0.35, w),
        half_stars=rng.random(w) < 0.6,
        first_time=rng.integers(FIRST_TIME, LAST_TIME - active_seconds + 1),
        active_seconds=active_seconds,
        movie_ids=sparse_movie_ids(rng, m),
        movie_group=movie_group,
        movie_quality=rng.normal(0.0, 0.4, m) + 0.4 * (0.5 - rank / m),
        log_weights=np.log(by_group),
        cdf=cdf,
        cover_watcher=cover_watcher[order],
        cover_movie=order,
    )


def pick_movies(rng: np.random.Generator, world: World, lo: int, hi: int) -> np.ndarray:
    """The movies each watcher lo..hi-1 rates, as sorted keys (local watcher x movies + row)."""
    m = len(world.movie_ids)
    counts, group = world.counts[lo:hi], world.watcher_group[lo:hi]
    a, b = np.searchsorted(world.cover_watcher, [lo, hi])
    keys = (world.cover_watcher[a:b] - lo) * m + world.cover_movie[a:b]
    exact = counts * 50 > m  # heavy watchers: top-k over all movies is cheaper than redrawing
    for _ in range(ROUNDS):
        short = np.where(exact, 0, counts - np.bincount(keys // m, minlength=hi - lo))
        if not short.any():
            break
        # Draw with replacement (a few extra for repeats), keep the first new ones per watcher.
        watcher = np.repeat(np.arange(hi - lo), np.where(short > 0, short + short // 4 + 4, 0))
        u = rng.random(len(watcher)) + group[watcher]
        drawn = watcher * m + np.searchsorted(world.cdf, u, side="right") - group[watcher] * m
        mine = short[keys // m] > 0  # only those watchers' movies can repeat
        _, first = np.unique(np.concatenate([keys[mine], drawn]), return_index=True)
        new = drawn[np.sort(first[first >= mine.sum()]) - mine.sum()]  # in draw order
        owner = new // m
        rank = np.arange(len(new)) - np.searchsorted(owner, owner)
        keys = np.concatenate([keys, new[rank < short[owner]]])
    keys.sort()
    have = np.bincount(keys // m, minlength=hi - lo)
    extra = []
    for i in np.flatnonzero(have < counts):  # heavy watchers, and any the rounds left short
        log_weights = world.log_weights[group[i]].copy()
        mine = keys[np.searchsorted(keys, i * m) : np.searchsorted(keys, (i + 1) * m)] - i * m
        log_weights[mine] = -np.inf
        extra.append(i * m + top_k(rng, log_weights, counts[i] - have[i]))
    return np.sort(np.concatenate([keys, *extra]))


def ratings_table(rng: np.random.Generator, world: World, lo: int, keys: np.ndarray) -> pa.Table:
    m = len(world.movie_ids)
    watcher, movie = lo + keys // m, keys % m
    same = world.movie_group[movie] == world.watcher_group[watcher]
    stars = (
        3.25
        + world.movie_quality[movie]
        + world.watcher_bias[watcher]
        + GROUP_AFFINITY * same
        + rng.normal(0.0, 0.9, len(keys))
    )
    step = np.where(world.half_stars[watcher], 1, 2)  # in half stars
    halves = np.clip(np.rint(stars * 2 / step) * step, step, 10).astype(np.int8)
    # Most of a watcher's ratings come soon after its first, as when MovieLens users sign up.
    when = world.first_time[watcher] + (
        rng.random(len(keys)) ** 3 * world.active_seconds[watcher]
    ).astype(np.int64)
    columns = [
        pa.array(watcher + 1, pa.int32()),
        pa.array(world.movie_ids[movie], pa.int32()),
        pa.DictionaryArray.from_arrays(pa.array(halves - 1), STARS),
        pa.array(when, pa.int64()),
    ]
    return pa.Table.from_arrays(columns, schema=RATINGS_SCHEMA)


def write_ratings(rng: np.random.Generator, world: World, path: Path) -> np.ndarray:
    """Writes ratings.csv a chunk of watchers at a time; returns ratings per movie row."""
    per_movie = np.zeros(len(world.movie_ids), np.int64)
    watchers = len(world.counts)
    with open(path, "wb") as out:
        out.write(b"userId,movieId,rating,timestamp\n")
        options = pacsv.WriteOptions(include_header=False, quoting_style="none")
        with pacsv.CSVWriter(out, RATINGS_SCHEMA, write_options=options) as writer:
            for lo in range(0, watchers, CHUNK_WATCHERS):
                hi = min(lo + CHUNK_WATCHERS, watchers)
                keys = pick_movies(rng, world, lo, hi)
                per_movie += np.bincount(keys % len(world.movie_ids), minlength=len(per_movie))
                writer.write_table(ratings_table(rng, world, lo, keys))
                print(f"  watchers {hi:,} / {watchers:,}", file=sys.stderr, flush=True)
    return per_movie


def titles(rng: np.random.Generator, world: World) -> list[str]:
    """Made-up titles as MovieLens writes them: "Words, The (1999)", sometimes an
    alternative title in parentheses, sometimes a quoted part."""
    m = len(world.movie_ids)
    year = np.clip(1915 + 105 * np.arange(m) / m + rng.normal(0, 15, m), 1902, 2019).astype(int)
    vocabulary = WORDS.split()
    lengths = rng.integers(1, 5, m)
    words = rng.integers(len(vocabulary), size=(m, 4))
    kind = rng.random(m)
    article = rng.integers(len(ARTICLES), size=m)
    out = []
    for i in range(m):
        name = " ".join(vocabulary[w] for w in words[i, : lengths[i]])
        if kind[i] < 0.15:
            name = f"{name}, {ARTICLES[article[i]]}"
        if 0.12 <= kind[i] < 0.15:
            other = ARTICLES[(article[i] + 1) % len(ARTICLES)]
            name = f"{name} ({vocabulary[words[i, 3]]} {vocabulary[words[i, 2]]}, {other})"
        elif 0.15 <= kind[i] < 0.16:
            name = f'"{name}" {vocabulary[words[i, 3]]}'
        out.append(f"{name} ({year[i]})")
    return out


def genres(rng: np.random.Generator, world: World) -> list[str]:
    """Each movie has its taste group's genre and a few others, "A|B" sorted as in MovieLens."""
    m, names = len(world.movie_ids), np.array(GENRES.split("|"))
    flags = rng.random((m, len(names))) < 0.08
    flags[np.arange(m), world.movie_group % len(names)] = True
    none = rng.random(m) < 0.02
    return ["(no genres listed)" if none[i] else "|".join(names[flags[i]]) for i in range(m)]


def write_movies(rng: np.random.Generator, world: World, path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")  # quotes only where needed, as ML does
        writer.writerow(["movieId", "title", "genres"])
        writer.writerows(
            zip(world.movie_ids.tolist(), titles(rng, world), genres(rng, world), strict=True)
        )


def generate(shape: Shape, out: Path) -> None:
    shape.check()
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "generated.json"
    manifest.unlink(missing_ok=True)  # present only once both files are whole
    rng = np.random.default_rng(shape.seed)
    start = time.perf_counter()
    world = make_world(rng, shape)
    setup = time.perf_counter() - start
    start = time.perf_counter()
    write_movies(rng, world, out / "movies.csv.part")
    os.replace(out / "movies.csv.part", out / "movies.csv")
    movies_seconds = time.perf_counter() - start
    start = time.perf_counter()
    per_movie = write_ratings(rng, world, out / "ratings.csv.part")
    os.replace(out / "ratings.csv.part", out / "ratings.csv")
    ratings_seconds = time.perf_counter() - start
    manifest.write_text(json.dumps(asdict(shape)) + "\n")

    ratings_mb = (out / "ratings.csv").stat().st_size / 2**20
    movies_mb = (out / "movies.csv").stat().st_size / 2**20
    print("| file | rows | seconds | rows/s | size |\n|---|---|---|---|---|")
    print(
        f"| ratings.csv | {shape.ratings:,} | {ratings_seconds:.1f} | "
        f"{shape.ratings / ratings_seconds:,.0f} | {ratings_mb:,.1f} MiB |"
    )
    print(
        f"| movies.csv | {shape.movies:,} | {movies_seconds:.1f} | "
        f"{shape.movies / movies_seconds:,.0f} | {movies_mb:,.2f} MiB |"
    )
    print(f"\n(setup {setup:.1f} s; {out})\n")
    counts, top = world.counts, np.sort(per_movie)[::-1]
    print("| shape | figure |\n|---|---|")
    print(f"| watchers, movies, ratings | {len(counts):,}, {len(top):,}, {int(counts.sum()):,} |")
    print(
        f"| ratings per watcher: min / median / mean / max | {counts.min()} / "
        f"{np.median(counts):.0f} / {counts.mean():.1f} / {counts.max():,} |"
    )
    print(
        f"| ratings per movie: min / median / mean / max | {top[-1]} / {np.median(top):.0f} / "
        f"{top.mean():.1f} / {top[0]:,} |"
    )
    share = top[: max(1, len(top) // 100)].sum() / top.sum()
    print(f"| share of ratings on the top 1% of movies | {share:.1%} |")
    print(f"| movies with 1 rating | {(top == 1).mean():.1%} |")
    print(f"| movieId range | {world.movie_ids[0]}..{world.movie_ids[-1]:,} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write into")
    parser.add_argument("--watchers", type=int, default=ML25M.watchers)
    parser.add_argument("--movies", type=int, default=ML25M.movies)
    parser.add_argument("--ratings", type=int, default=ML25M.ratings)
    parser.add_argument("--groups", type=int, default=ML25M.groups, help="latent taste groups")
    parser.add_argument("--seed", type=int, default=ML25M.seed)
    args = parser.parse_args()
    generate(Shape(args.watchers, args.movies, args.ratings, args.groups, args.seed), args.out)


if __name__ == "__main__":
    main()
