"""Mutation testing of the domain modules with mutmut: `scripts/mutation.py [module ...]`."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "build" / "mutation"
MUTMUT = Path(sys.executable).parent / "mutmut"
SERVER, CLIENT = "src/movie_embeddings_server", "src/movie_embeddings"


@dataclass(frozen=True)
class Target:
    source: str  # the file mutmut mutates, under the staged src/
    tests: tuple[str, ...]  # fast tests that reach it, under tests/unit/
    # Tests of seconds each (processes racing on one store), under tests/: run only against
    # the mutants the fast tests leave alive.
    slow: tuple[str, ...] = field(default=())


def _server(path: str, *tests: str, slow: tuple[str, ...] = ()) -> Target:
    return Target(f"{SERVER}/{path}.py", tests, slow)


# Each module with the tests that reach it: mutmut runs, per mutant, those of them that call
# the mutated function. No TensorFlow, no server processes.
TARGETS = {
    "search": _server("model/search", "search", "inference", "catalogue", "quality"),
    "inference": _server("model/inference", "inference", "catalogue", "quality", "store"),
    "vectors": _server("model/vectors", "inference", "catalogue", "quality", "store"),
    "watchers": _server("model/watchers", "inference", "catalogue", "quality", "store"),
    "store": _server("store/models", "store", "datasets"),
    "loaded": _server("store/loaded", "store", "datasets"),
    "versions": _server(
        "store/versions",
        "versions",
        "store",
        "datasets",
        slow=("integration/test_store_processes.py",),
    ),
    "security": _server("serving/security", "security_checks"),
    "config": _server("config", "config", "data", "rows"),
    "quality": _server("training/quality", "quality"),
    "data": _server("training/synthetic", "data", "quality"),
    "catalogue": _server("model/catalogue", "catalogue", "inference", "store"),
    "datasets": _server("store/datasets", "datasets", "rows"),
    "_convert": Target(f"{CLIENT}/_convert.py", ("convert",)),
    "errors": Target(f"{CLIENT}/errors.py", ("errors", "convert")),
}

# Survivors judged equivalent (no test can tell them from the original), per module: groups
# of `function: old line -> mutated line` with the reason. Keyed by the change, not mutmut's
# mutant number, which shifts when the function changes; a judgement whose line is gone
# stops matching, and its mutant counts against the score again.
EQUIVALENT = ROOT / "scripts" / "mutation-equivalent.toml"

# mutmut's exit codes (mutmut.stats.status_by_exit_code): killed by a failing test (1, 3) or
# by running out of time (timeouts); 0 is a survivor, 33 a mutant no selected test reaches.
KILLED = {1, 3, 24, -24, 36, 152, 255}


def stage(work: Path, target: Target, tests: list[str]) -> None:
    """A mutmut project in `work`: the packages linked under src/ (so `src/` maps to the
    import names), the tests linked, and pyproject.toml with the [tool.mutmut] table."""
    links = {
        SERVER: ROOT / "server/movie_embeddings_server",
        CLIENT: ROOT / "client/movie_embeddings",
        "tests/conftest.py": ROOT / "tests/conftest.py",
        "tests/unit": ROOT / "tests/unit",
        "tests/integration": ROOT / "tests/integration",
    }
    for link, to in links.items():
        path = work / link
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_symlink():
            path.symlink_to(to)
    settings = {
        "source_paths": [SERVER, CLIENT],
        "only_mutate": [target.source],
        "pytest_add_cli_args_test_selection": [f"tests/{t}" for t in tests],
        "pytest_add_cli_args": ["-p", "no:cacheprovider"],
        # gRPC is not fork-safe once used: fork each mutant from a server that only collected.
        "process_isolation": "forkserver",
    }
    table = "\n".join(f"{key} = {json.dumps(value)}" for key, value in settings.items())
    pyproject = (ROOT / "pyproject.toml").read_text() + f"\n[tool.mutmut]\n{table}\n"
    tomllib.loads(pyproject)  # a [tool.mutmut] table already in the repo's file would clash
    (work / "pyproject.toml").write_text(pyproject)


def results(work: Path, target: Target) -> dict[str, int | None]:
    meta = work / "mutants" / f"{target.source}.meta"
    if not meta.exists():
        return {}
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    return codes


def survivors(codes: dict[str, int | None]) -> list[str]:
    return [key for key, code in codes.items() if code not in KILLED]


def mutmut(work: Path, max_children: int, *mutants: str) -> None:
    """`mutmut run` in `work`: the mutants not tested yet, or exactly `mutants`."""
    log = work / "mutmut.log"
    with log.open("a") as out:
        command = [str(MUTMUT), "run", "--max-children", str(max_children), *mutants]
        done = subprocess.run(command, cwd=work, stdout=out, stderr=out, check=False)
    if done.returncode:
        sys.exit(f"mutmut failed in {work}: see {log}")


def slow_work(name: str) -> Path:
    return WORK / f"{name}-slow"


def changed_line(work: Path, target: Target, mutant: str) -> str:
    """The mutant's change, `old -> new`, from the diff `mutmut show` prints."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    with contextlib.chdir(work):
        diff = get_diff_for_mutant(mutant, path=target.source).splitlines()[2:]
    old, new = (" / ".join(ln[1:].strip() for ln in diff if ln[:1] == sign) for sign in "-+")
    return f"{old} -> {new}"


def function(mutant: str) -> str:
    """`pkg.module.x_name__mutmut_3` -> `name`, `pkg.module.xǁClassǁname__mutmut_3` ->
    `Class.name`."""
    mangled = mutant.rpartition(".")[2].partition("__mutmut_")[0]
    return mangled.removeprefix("x_").removeprefix("xǁ").replace("ǁ", ".")


@dataclass
class Row:
    name: str
    mutants: int
    killed: int
    survivors: dict[str, str]  # survivor -> its change
    equivalent: dict[str, str]  # survivor -> why it is equivalent
    seconds: float | None

    @property
    def score(self) -> float:
        judged = self.mutants - len(self.equivalent)
        return 100.0 * self.killed / judged if judged else 100.0


def tally(name: str, seconds: float | None = None) -> Row:
    """The verdicts of the module's last run (a slow test's kill counts)."""
    target, work = TARGETS[name], WORK / name
    codes = results(work, target)
    if target.slow:
        slow = results(slow_work(name), target)
        codes |= {key: slow.get(key) for key in survivors(codes) if slow.get(key) in KILLED}
    alive = {key: changed_line(work, target, key) for key in sorted(survivors(codes))}
    groups = tomllib.loads(EQUIVALENT.read_text()).get(name, [])
    judged = {change: group["why"] for group in groups for change in group["changes"]}
    equivalent = {
        key: judged[f"{function(key)}: {change}"]
        for key, change in alive.items()
        if f"{function(key)}: {change}" in judged
    }
    killed = len(codes) - len(alive)
    return Row(name, len(codes), killed, alive, equivalent, seconds)


def run(name: str, max_children: int, fresh: bool) -> Row:
    target, work = TARGETS[name], WORK / name
    if fresh:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(slow_work(name), ignore_errors=True)
    stage(work, target, [f"unit/test_{t}.py" for t in target.tests])
    (work / "mutmut.log").unlink(missing_ok=True)
    start = time.monotonic()
    cached = [key for key, code in results(work, target).items() if code not in KILLED | {None}]
    mutmut(work, max_children)
    # mutmut keeps a verdict while its function is unchanged: tests added since the last run
    # must get their chance at the survivors (and at mutants no test reached then).
    if still := [key for key in survivors(results(work, target)) if key in cached]:
        mutmut(work, max_children, *still)
    if target.slow and (alive := survivors(results(work, target))):
        slow = slow_work(name)
        stage(slow, target, [f"unit/test_{t}.py" for t in target.tests] + list(target.slow))
        (slow / "mutmut.log").unlink(missing_ok=True)
        mutmut(slow, max_children, *alive)
    return tally(name, time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("modules", nargs="*", help=f"some of {', '.join(TARGETS)} (default: all)")
    parser.add_argument("--fresh", action="store_true", help="forget mutmut's cached verdicts")
    parser.add_argument("--report", action="store_true", help="only print the last runs' table")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if unknown := set(args.modules) - set(TARGETS):
        parser.error(f"unknown modules {sorted(unknown)}: choose from {', '.join(TARGETS)}")
    names = args.modules or list(TARGETS)
    if args.report:
        rows = [tally(name) for name in names]
    else:
        rows = [run(name, args.max_children, args.fresh) for name in names]
    print("| module | mutants | killed | survived | equivalent | score | time |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        took = "" if r.seconds is None else f"{r.seconds:.0f} s"
        print(
            f"| {r.name} | {r.mutants} | {r.killed} | {len(r.survivors)} | "
            f"{len(r.equivalent)} | {r.score:.1f} % | {took} |"
        )
    for r in rows:
        for key, change in r.survivors.items():
            verdict = f"equivalent: {r.equivalent[key]}" if key in r.equivalent else "SURVIVED"
            print(f"[{r.name}] {key.rpartition('.')[2]}  ({verdict})\n  {function(key)}: {change}")
    if any(r.score < 90 for r in rows):
        sys.exit("below 90 % of the non-equivalent mutants killed")


if __name__ == "__main__":
    main()
