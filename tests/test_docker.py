"""The Dockerfile: hadolint-clean, and (no Docker engine here) what it says is checked statically.

Its commands are parsed with the real CLI parser, its pip extra is checked against pyproject.toml
and everything it copies from the build context must exist and survive .dockerignore.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from movie_embeddings_server.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
TIMEOUT = 60  # seconds


@dataclass
class Stage:
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)  # (INSTRUCTION, arguments)

    def args(self, instruction: str) -> list[str]:
        return [rest for name, rest in self.instructions if name == instruction]

    def last(self, instruction: str) -> str:
        found = self.args(instruction)
        assert found, f"no {instruction} in the stage FROM {self.image}"
        return found[-1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs: comments dropped, continuation lines joined."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # also inside a continued instruction, as Docker does
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        line = pending + line
        pending = ""
        name, _, rest = line.partition(" ")
        out.append((name.upper(), rest.strip()))
    assert not pending, "the Dockerfile ends inside a continued instruction"
    return out


def stages() -> list[Stage]:
    result: list[Stage] = []
    for name, rest in instructions(DOCKERFILE.read_text()):
        if name == "FROM":
            words = rest.split()
            words = [w for w in words if not w.startswith("--")]  # --platform=...
            alias = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            result.append(Stage(words[0], alias))
        else:
            assert result, f"{name} before the first FROM"
            result[-1].instructions.append((name, rest))
    return result


def exec_form(text: str) -> list[str]:
    """A JSON-array (exec form) ENTRYPOINT/CMD; shell form would run under /bin/sh -c."""
    value = json.loads(text)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), text
    return value


def seconds(duration: str) -> float:
    """A Docker duration: 90s, 2m, 1m30s, 500ms."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


FINAL = stages()[-1]


def expose_port() -> int:
    ports = [p for rest in FINAL.args("EXPOSE") for p in rest.split()]
    assert ports == ["50051"], ports  # one port: gRPC (plain TCP)
    return int(ports[0].removesuffix("/tcp"))


def test_hadolint_passes() -> None:
    hadolint = shutil.which("hadolint", path=os.path.dirname(sys.executable))
    if hadolint is None:
        pytest.fail("hadolint not found beside the interpreter: pip install -e '.[dev]'")
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_multi_stage_with_pinned_bases() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2, "builder and runtime stages"
    aliases = {s.name for s in all_stages if s.name}
    for stage in all_stages:
        if stage.image in aliases:
            continue  # FROM an earlier stage
        repo, _, tag = stage.image.partition(":")
        assert tag and "@" not in repo, f"{stage.image}: pin a tag"
        # An exact release (python:3.11.11-slim-bookworm), not a moving one (latest, 3.11, 3).
        assert re.fullmatch(r"\d+\.\d+\.\d+(-[a-z0-9.-]+)?(@sha256:[0-9a-f]{64})?", tag), (
            stage.image
        )


def test_final_stage_runs_as_a_fixed_non_root_user() -> None:
    user = FINAL.last("USER").split(":")[0]
    assert user not in {"root", "0", ""}
    assert user.isdigit(), "a numeric UID: Kubernetes' runAsNonRoot can only verify a number"


def test_data_volume() -> None:
    assert any(
        "/data" in (json.loads(v) if v.startswith("[") else v.split()) for v in FINAL.args("VOLUME")
    )
    assert "MOVIE_EMBEDDINGS_DATA_DIR=/data" in " ".join(FINAL.args("ENV")).split()


def test_entrypoint_and_cmd_serve_on_the_exposed_port() -> None:
    command = exec_form(FINAL.last("ENTRYPOINT")) + exec_form(FINAL.last("CMD"))
    assert command[0] == "movie-embeddings"
    args = build_parser().parse_args(command[1:])
    assert args.command == "serve"
    assert (args.host, args.port, args.data_dir) == ("0.0.0.0", 50051, "/data")
    assert args.port == expose_port()


def test_healthcheck_calls_the_health_command_on_the_served_port() -> None:
    options, _, command = FINAL.last("HEALTHCHECK").partition(" CMD ")
    flags = dict(opt.removeprefix("--").split("=", 1) for opt in options.split())
    # The server trains a default model on an empty store before it reports SERVING.
    assert seconds(flags["start-period"]) >= 60
    assert seconds(flags["timeout"]) <= seconds(flags["interval"])
    health = exec_form(command)
    assert health[0] == "movie-embeddings"
    try:
        args = build_parser().parse_args(health[1:])
    except SystemExit:
        pytest.fail(f"the CLI does not parse {health[1:]} (no `health` subcommand yet?)")
    assert args.command == "health"
    host, _, port = args.target.rpartition(":")
    assert host in {"127.0.0.1", "localhost"}
    assert int(port) == expose_port()
    # Its own deadline, under Docker's: the CLI reports before Docker kills it.
    assert args.timeout is not None, "give `health` a --timeout under HEALTHCHECK's"
    assert args.timeout < seconds(flags["timeout"])


def test_pip_installs_the_server_extra_that_pyproject_defines() -> None:
    builder = stages()[0]
    # ${NAME} as the ARG's default gives it (--build-arg may choose other extras).
    defaults = dict(a.split("=", 1) for a in builder.args("ARG"))
    installs = [
        shlex.split(re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], r))
        for r in builder.args("RUN")
        if "pip install" in r
    ]
    extras: set[str] = set()
    for words in installs:
        for word in words:
            # The project itself with extras: .[server], ./[server], /src[server].
            match = re.fullmatch(r"(\.|\./|/[\w/.-]*)\[([\w,\s-]+)\]", word)
            if match:
                extras |= {e.strip() for e in match.group(2).split(",")}
    assert "server" in extras, installs
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    defined = pyproject["project"]["optional-dependencies"]
    assert extras <= set(defined)
    assert any(dep.startswith("tensorflow") for dep in defined["server"])
    # The GPU image's extras (EXTRAS=server,gpu): TensorFlow's CUDA build.
    assert any(dep.startswith("tensorflow[and-cuda]") for dep in defined["gpu"])
    # The image runs the CLI's console script.
    assert pyproject["project"]["scripts"]["movie-embeddings"].startswith("movie_embeddings_server")


def dockerignore_patterns() -> list[tuple[bool, re.Pattern[str]]]:
    """(excludes?, regex) per .dockerignore line, Docker's (Go filepath.Match + **) syntax."""
    patterns = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        line = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex, i = "", 0
        while i < len(line):
            if line.startswith("**/", i):
                regex, i = regex + "(?:.*/)?", i + 3
            elif line.startswith("**", i):
                regex, i = regex + ".*", i + 2
            elif line[i] == "*":
                regex, i = regex + "[^/]*", i + 1
            elif line[i] == "?":
                regex, i = regex + "[^/]", i + 1
            elif line[i] == "[":
                end = line.index("]", i + 1)
                body = line[i + 1 : end]
                regex += "[" + ("^" + body[1:] if body.startswith("^") else body) + "]"
                i = end + 1
            elif line[i] == "\\" and i + 1 < len(line):
                regex, i = regex + re.escape(line[i + 1]), i + 2
            else:
                regex, i = regex + re.escape(line[i]), i + 1
        patterns.append((not negate, re.compile(regex)))
    return patterns


def ignored(path: str, patterns: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves `path` (relative to the context) out: the last match decides,
    and a pattern matching a parent directory matches everything under it."""
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for excludes, regex in patterns:
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = excludes
    return excluded


def test_dockerignore_matcher() -> None:
    patterns = dockerignore_patterns()
    assert ignored(".git/HEAD", patterns)
    assert ignored("server/movie_embeddings_server/__pycache__/cli.cpython-311.pyc", patterns)
    assert ignored("tests/test_docker.py", patterns)
    assert ignored("data/default/1/model.keras", patterns)
    assert ignored("client/node_modules/x/package.json", patterns)
    assert not ignored("server/movie_embeddings_server/cli/__init__.py", patterns)


def test_copied_paths_exist_and_are_in_the_build_context() -> None:
    patterns = dockerignore_patterns()
    sources: list[str] = []
    for stage in stages():
        for rest in stage.args("COPY") + stage.args("ADD"):
            words = rest.split()
            if any(w.startswith("--from=") for w in words):
                continue  # from another stage, not the build context
            words = [w for w in words if not w.startswith("--")]
            if words[0].startswith("["):
                words = json.loads(rest[rest.index("[") :])
            sources += words[:-1]  # the last word is the destination
    assert sources
    for source in sources:
        rel = os.path.normpath(source).lstrip("/")
        path = ROOT / rel
        assert path.exists(), f"COPY {source}: not in the repository"
        assert not ignored(rel, patterns), f"COPY {source}: excluded by .dockerignore"
        # What the package needs from a copied directory must survive .dockerignore too.
        files = [path] if path.is_file() else [*path.rglob("*.py"), *path.rglob("*.pyi")]
        files += list(path.rglob("py.typed")) if path.is_dir() else []
        assert files, f"COPY {source}: nothing to install"
        for file in files:
            name = file.relative_to(ROOT).as_posix()
            assert not ignored(name, patterns), f"{name}: excluded by .dockerignore"
