"""The queries of a model: `vector`, `nearest`, `reconstruct`, `recommend` and `search`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np

import movie_embeddings as me

from .common import (
    UsageError,
    client_command,
    eprint,
    finite_float,
    model_ref,
    movie_ids,
    nonnegative_int,
    positive_int,
    print_json,
    readable,
    titled,
)

RATINGS_FILE_HELP = (
    "file of the watcher's ratings in [0, 1], either one per movie in the model's catalogue "
    "order (comma-separated on one line, or one per line), or lines of `movie_id,rating` "
    "(movies not listed are 0; a single pair needs a header line); a first line that is "
    "not numbers (column names) is skipped"
)


def _kernel_text(matrix: np.ndarray, decimals: int | None) -> str:
    """The matrix as the notebook prints it, where a value that shows as zero is `0.`:
    its sign is float noise, and `-0.` reads as data."""
    precision = 8 if decimals is None else decimals  # numpy's own default
    shown = np.where(np.abs(matrix) < 0.5 * 10.0**-precision, 0, matrix)
    with np.printoptions(suppress=True, threshold=sys.maxsize, precision=precision):
        return repr(shown)


def cmd_vector(client: me.Client, args: argparse.Namespace) -> None:
    if args.all:
        ids, matrix = client.movie_vectors(model=model_ref(args))
    elif args.movie_id is None:
        raise UsageError("vector: give MOVIE_ID or --all")
    else:
        ids = np.array([args.movie_id])
        matrix = client.movie_vector(args.movie_id, model=model_ref(args))[None, :]
    if args.round is not None:
        matrix = np.round(matrix.astype(np.float64), args.round)  # float32 can't hold 0.09
    if args.json:
        print_json(
            [{"movie_id": int(i), "vector": row} for i, row in zip(ids, matrix, strict=True)]
        )
    elif args.all:
        print(_kernel_text(matrix, args.round))
    else:
        print(" ".join(f"{x:g}" for x in matrix[0] + 0.0))  # + 0.0: no -0


def _best_match(client: me.Client, args: argparse.Namespace) -> me.Movie:
    found = client.search_movies(args.title, limit=1, model=model_ref(args))
    if not found:
        raise me.NotFound(f"no movie title matches {args.title!r}", grpc.StatusCode.NOT_FOUND)
    return found[0]


def _filters(args: argparse.Namespace) -> dict[str, Any]:
    """--min-likes, --genre and --exclude-genre as the SDK's filters."""
    return {
        "min_likes": args.min_likes,
        "genres": args.genre or (),
        "exclude_genres": args.exclude_genre or (),
    }


def _filter_options(parser: argparse.ArgumentParser, min_likes_default: str) -> None:
    parser.add_argument(
        "--min-likes",
        type=nonnegative_int,
        default=None,
        help="only movies liked at least this often by the model's training watchers "
        f"(default: {min_likes_default})",
    )
    parser.add_argument(
        "--genre",
        action="append",
        metavar="GENRE",
        help="only movies of this genre (any case; repeat for any of several)",
    )
    parser.add_argument(
        "--exclude-genre",
        action="append",
        metavar="GENRE",
        help="no movie of this genre (any case; repeatable)",
    )


def cmd_nearest(client: me.Client, args: argparse.Namespace) -> None:
    if (args.movie_id is None) == (args.title is None):
        raise UsageError("nearest: give MOVIE_ID or --title, not both")
    movie_id = args.movie_id
    if args.title is not None:
        match = _best_match(client, args)
        movie_id = match.movie_id
        (eprint if args.json else print)(f"nearest to {titled(match.movie_id, match.title)}")
    neighbors = client.nearest_movies(
        movie_id,
        k=args.k,
        metric=args.metric,
        exclude=args.exclude,
        model=model_ref(args),
        **_filters(args),
    )
    if args.json:
        print_json(neighbors)
        return
    print(f"{'movie_id':>8}  score ({args.metric})")
    for n in neighbors:
        print(f"{n.movie_id:>8}  {n.score:.6f}  {n.title}".rstrip())


def _numbers(name: str) -> tuple[np.ndarray, bool]:
    """A ratings file's numbers as rows x columns, and whether a header line was skipped."""
    path = readable(name)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"--ratings-file {name}: {exc}") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise UsageError(f"--ratings-file {name}: no ratings in it")
    header = False
    try:
        float(lines[0].split(",")[0])
    except ValueError:
        header, lines = True, lines[1:]
    try:
        table = np.loadtxt(lines, delimiter=",", dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise UsageError(f"--ratings-file {name}: {exc}") from exc
    if table.size == 0:
        raise UsageError(f"--ratings-file {name}: no ratings in it")
    return table, header


def read_ratings(
    client: me.Client, name: str, model: me.ModelRef
) -> tuple[Sequence[int], np.ndarray | None]:
    """(liked ids, None) or ((), dense ratings in catalogue order) from a ratings file."""
    table, header = _numbers(name)
    rows, columns = table.shape
    if columns != 2 or (rows == 1 and not header):
        return (), table.ravel().astype(np.float32)
    ids, values = table[:, 0], table[:, 1]
    if not np.array_equal(ids, np.round(ids)):
        raise UsageError(f"--ratings-file {name}: movie ids must be integers")
    if np.isin(values, (0.0, 1.0)).all():
        return ids[values == 1].astype(np.int64).tolist(), None  # the same input, sent lighter
    catalogue, _ = client.movie_vectors(model=model)
    row_of = {int(m): row for row, m in enumerate(catalogue)}
    missing = [int(m) for m in ids if int(m) not in row_of]
    if missing:
        raise UsageError(f"--ratings-file {name}: movie {missing[0]} is not in the model")
    ratings = np.zeros(len(catalogue), np.float32)
    ratings[[row_of[int(m)] for m in ids]] = values
    return (), ratings


def _features(client: me.Client, args: argparse.Namespace) -> tuple[float, int]:
    """--age and --education; a model trained without one (a dataset's) need not be told it."""
    if args.age is not None and args.education is not None:
        return args.age, args.education
    info = client.get_model(model_ref(args))
    for flag, given, needed in (
        ("--age", args.age, info.has_age),
        ("--education", args.education, info.has_education),
    ):
        if given is None and needed:
            raise UsageError(f"reconstruct: {info.name} v{info.version} needs {flag}")
    return args.age or 0.0, args.education or 0  # ignored by the model


SHOWN_PROBABILITIES = 100  # more are left to --json when there are recommendations to show


def liked_by_titles(client: me.Client, text: str, model: me.ModelRef) -> list[me.Movie]:
    """The best title match (SearchMovies' first) of each `;`-separated part of `text`."""
    parts = [part.strip() for part in text.split(";") if part.strip()]
    if not parts:
        raise UsageError(f"reconstruct: --liked-titles {text!r} names no title")
    matches = []
    for part in parts:
        found = client.search_movies(part, limit=1, model=model)
        if not found:
            raise UsageError(f"reconstruct: --liked-titles: no movie title matches {part!r}")
        matches.append(found[0])
    return matches


def cmd_reconstruct(client: me.Client, args: argparse.Namespace) -> None:
    liked, ratings = args.liked or (), None
    if args.ratings_file:
        liked, ratings = read_ratings(client, args.ratings_file, model_ref(args))
    if args.liked_titles is not None:
        matches = liked_by_titles(client, args.liked_titles, model_ref(args))
        liked = [m.movie_id for m in matches]
        shown = ", ".join(
            f"{m.title} [{m.movie_id}]" if m.title else str(m.movie_id) for m in matches
        )
        (eprint if args.json else print)(f"liked: {shown}")
    age, education = _features(client, args)
    result = client.reconstruct(
        liked,
        ratings=ratings,
        age_years=age,
        education=education,
        top_k=args.top_k,
        # The recommendations alone are a few hundred bytes, every probability 4 per movie.
        probabilities=args.all_probabilities or not args.top_k,
        because=args.because,
        model=model_ref(args),
        **_filters(args),
    )
    if args.json:
        print_json(result)
        return
    every = result.probabilities
    if len(every) and (len(every) <= SHOWN_PROBABILITIES or not result.recommendations):
        print("probabilities: " + " ".join(f"{p:.3f}" for p in every))
    elif len(every):  # a real catalogue's thousands of values: --json has them all
        print(f"probabilities of {len(every)} movies: see --json")
    if result.recommendations:
        _print_recommendations(result.recommendations)


def _print_recommendations(recommendations: Sequence[me.Recommendation]) -> None:
    print(f"{'movie_id':>8}  probability")
    for r in recommendations:
        print(f"{r.movie_id:>8}  {r.probability:.4f}  {r.title}".rstrip())
        if r.because_movie_ids:
            liked = zip(r.because_movie_ids, r.because_titles, strict=True)
            print(f"{'':>8}  because you liked {'; '.join(titled(*m) for m in liked)}")


def cmd_recommend(client: me.Client, args: argparse.Namespace) -> None:
    recommendations = client.recommend(
        args.watcher_id,
        top_k=args.top_k,
        because=args.because,
        model=model_ref(args),
        **_filters(args),
    )
    if args.json:
        print_json(recommendations)
        return
    _print_recommendations(recommendations)


def cmd_search(client: me.Client, args: argparse.Namespace) -> None:
    movies = client.search_movies(args.text, limit=args.limit, model=model_ref(args))
    if args.json:
        print_json(movies)
        return
    if not movies:
        print(f"no movie title matches {args.text!r}")
        return
    print(f"{'movie_id':>8}  {'likes':>7}  title")
    for m in movies:
        genres = f"  ({', '.join(m.genres)})" if m.genres else ""
        print(f"{m.movie_id:>8}  {m.num_likes:>7}  {m.title}{genres}")


def _vector_command(sub: Any) -> None:
    vector = client_command(
        sub,
        "vector",
        cmd_vector,
        model=True,
        help="print a movie's vector",
        description="Print a movie's row of the embedding kernel, or every row.",
    )
    vector.add_argument("movie_id", metavar="MOVIE_ID", type=int, nargs="?", help="the movie's id")
    vector.add_argument(
        "--all",
        action="store_true",
        help="print the whole kernel (one row per movie, in catalogue order)",
    )
    vector.add_argument(
        "--round", type=nonnegative_int, default=None, help="round to this many decimals"
    )


def _nearest_command(sub: Any) -> None:
    nearest = client_command(
        sub,
        "nearest",
        cmd_nearest,
        model=True,
        help="print the movies nearest to a movie",
        description="Print the K movies nearest to a movie (by id, or the best match of "
        "--title), best first, with their titles when the model has them.",
    )
    nearest.add_argument("movie_id", metavar="MOVIE_ID", type=int, nargs="?", help="the movie's id")
    nearest.add_argument(
        "--title", help="the movie whose title best matches this text (see `search`) instead"
    )
    nearest.add_argument(
        "--k", type=int, default=10, help="number of neighbours (default: %(default)s)"
    )
    nearest.add_argument(
        "--metric",
        choices=["cosine", "dot", "euclidean"],
        default="cosine",
        help="scoring; higher is nearer (default: %(default)s)",
    )
    nearest.add_argument(
        "--exclude", type=movie_ids, default=[], help="comma-separated movie ids never to return"
    )
    _filter_options(
        nearest,
        "on a model trained on a dataset 10, or a tenth of its most liked movie's likes when "
        "less: rarely liked movies' vectors are mostly noise; 0 keeps every movie",
    )


def _reconstruct_command(sub: Any) -> None:
    rec = client_command(
        sub,
        "reconstruct",
        cmd_reconstruct,
        model=True,
        help="run the model on one watcher",
        description="Print the like-probability of every movie for one watcher (in catalogue "
        "order; with --top-k on a catalogue of over 100 movies only with --json), and the "
        "--top-k most probable movies it has not liked.",
    )
    source = rec.add_mutually_exclusive_group()
    source.add_argument(
        "--liked", type=movie_ids, help="comma-separated ids of the movies the watcher liked"
    )
    source.add_argument("--ratings-file", help=RATINGS_FILE_HELP)
    source.add_argument(
        "--liked-titles",
        metavar="TITLES",
        help="the movies the watcher liked by title, separated by ';', e.g. "
        "'toy story; finding nemo': each the best match of `search` (printed before the result)",
    )
    rec.add_argument(
        "--age",
        type=finite_float,
        help="age in years (needed unless the model was trained without ages)",
    )
    rec.add_argument(
        "--education",
        type=int,
        help="education level, 0..5 in the notebook's data (needed unless the model was "
        "trained without it)",
    )
    rec.add_argument(
        "--top-k",
        type=nonnegative_int,
        default=10,
        help="recommendations to print; 0 = none (default: %(default)s)",
    )
    rec.add_argument(
        "--all-probabilities",
        action="store_true",
        help="also ask for every movie's probability (4 bytes a movie; printed with --json, "
        "or in full on a small catalogue); without it only the --top-k recommendations "
        "come back, unless --top-k is 0",
    )
    _filter_options(rec, "none")
    _because_option(rec)


def _because_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--because",
        action="store_true",
        help="print under each recommendation the (up to) 3 movies the watcher liked whose "
        "vectors are nearest to it",
    )


def _recommend_command(sub: Any) -> None:
    rec = client_command(
        sub,
        "recommend",
        cmd_recommend,
        model=True,
        help="recommend movies to a watcher of the model's dataset",
        description="Print the --top-k most probable movies for a watcher of the dataset the "
        "model was trained on, named by its id there: its likes (held-out watchers' too) and "
        "features are the dataset's, and the movies it liked are never recommended.",
    )
    rec.add_argument(
        "watcher_id", metavar="WATCHER_ID", type=int, help="the watcher's id in the dataset"
    )
    rec.add_argument(
        "--top-k",
        type=positive_int,
        default=10,
        help="recommendations to print (default: %(default)s)",
    )
    _filter_options(rec, "none")
    _because_option(rec)


def add_commands(sub: Any) -> None:
    _vector_command(sub)
    _nearest_command(sub)
    _reconstruct_command(sub)
    _recommend_command(sub)
    search = client_command(
        sub,
        "search",
        cmd_search,
        model=True,
        help="find movies by title",
        description="Print the movies of the model's catalogue whose titles contain every word "
        "of TEXT (case and accents ignored), most liked first.",
    )
    search.add_argument("text", metavar="TEXT", help="words of the title, e.g. 'toy story'")
    search.add_argument(
        "--limit", type=positive_int, default=10, help="most movies to print (default: %(default)s)"
    )
