"""How `distill-guard serve` runs in the deployment, read from one of three forms.

- a Kubernetes manifest (`.yaml`/`.yml`, several documents allowed): the
  container named `distill-guard` (or the first whose image or command names
  distill-guard), in `containers` or `initContainers`; its `env` and `args`;
- an env file: `NAME=value` lines (`export` and quotes allowed) of
  `DISTILL_GUARD_*` and `OTEL_*` variables;
- a command line: a file whose first command word is `distill-guard` or
  `python -m authz`, followed by `serve` and its flags.

Flags win over the environment, as they do in `serve`. Values that come from a
Secret (`valueFrom`) are recorded as `<from secretKeyRef>`, never resolved.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from authz.errors import ConfigError
from authz.settings import ENV_PREFIX, Settings, convert_setting

SETTING_NAMES = frozenset(f.name for f in fields(Settings))


@dataclass
class ServeConfig:
    """serve's settings as written in the deployment (strings; absent means the default)."""

    source: str
    values: dict[str, str] = field(default_factory=dict)
    otel: dict[str, str] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    replicas: int | None = None

    def get(self, name: str) -> str | None:
        """The configured value of a setting, or None when it is left at its default."""
        return self.values.get(name)

    def effective(self, name: str) -> str:
        """The configured value, else the default `serve` would use."""
        value = self.values.get(name)
        if value is not None:
            return value
        default = next(f.default for f in fields(Settings) if f.name == name)
        return "" if default is None else str(default)

    def at(self, name: str) -> str:
        """Where a setting was read (or that it is the default)."""
        return self.where.get(name, f"{self.source}: {name} not set (default)")

    def number(self, name: str) -> float:
        """A numeric setting's effective value, converted as serve converts it (ValueError)."""
        value = convert_setting(name, self.effective(name))
        if not isinstance(value, int | float):
            raise ValueError(f"{name} is not a numeric setting")
        return float(value)

    def seconds(self, name: str, *, zero: bool) -> float:
        """A duration setting: finite, not negative, and not zero unless `zero`.

        serve takes nan or a negative number, but as a duration they mean nothing.
        ValueError with the evidence ("not a number", "-1 is not a duration").
        """
        try:
            value = self.number(name)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise ValueError(f"{value:g} is not a duration")
        return value

    def _set(self, setting: str, value: str, where: str) -> None:
        # A value serve would refuse at start-up is a broken deployment, not a finding.
        if not value.startswith("<from "):
            try:
                convert_setting(setting, value)
            except ValueError:
                raise ConfigError(where, "", f"{value!r}: serve refuses this value") from None
        self.values[setting] = value
        self.where[setting] = where

    def _set_env(self, name: str, value: str, where: str) -> None:
        if name.startswith(ENV_PREFIX):
            setting = name[len(ENV_PREFIX) :].lower()
            if setting in SETTING_NAMES and setting not in self.values:
                self._set(setting, value, f"{where} {name}")
        elif name.startswith("OTEL_"):
            self.otel[name] = value

    def _set_args(self, args: list[str], where: str) -> None:
        """Apply serve's flags (they override the environment)."""
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if not arg.startswith("--"):
                continue
            name, eq, value = arg[2:].partition("=")
            setting = name.replace("-", "_")
            if setting.startswith("no_") and setting[3:] in SETTING_NAMES and not eq:
                self._set(setting[3:], "false", f"{where} {arg}")
                continue
            if setting not in SETTING_NAMES:
                continue
            if not eq:
                if i < len(args) and not args[i].startswith("--"):
                    value = args[i]
                    i += 1
                else:
                    value = "true"  # a switch such as --audit-request-content
            self._set(setting, value, f"{where} --{name}")


def load_serve_config(path: Path) -> ServeConfig:
    """Read serve's settings from a manifest, an env file or a command line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc}") from None
    if path.suffix in {".yaml", ".yml"}:
        return _from_manifest(path, text)
    words = _command_words(text)
    command = [w for w in words if not _is_assignment(w)][:3]
    if command and (Path(command[0]).name == "distill-guard" or command[1:3] == ["-m", "authz"]):
        return _from_command(path, words)
    return _from_env_file(path, text)


def _is_assignment(word: str) -> bool:
    name, eq, _ = word.partition("=")
    return bool(eq) and name.isidentifier()


def _command_words(text: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    joined = " ".join(ln.rstrip().removesuffix("\\") for ln in lines)
    try:
        return shlex.split(joined)
    except ValueError:
        return []


def _from_command(path: Path, words: list[str]) -> ServeConfig:
    if "serve" not in words:
        raise ConfigError(str(path), "", "a command line, but not of `distill-guard serve`")
    conf = ServeConfig(source=path.name)
    # Leading NAME=value words are the command's environment.
    for word in words:
        if not _is_assignment(word):
            break
        name, _, value = word.partition("=")
        conf._set_env(name, value, path.name)
    conf._set_args(words[words.index("serve") + 1 :], path.name)
    return conf


def _from_env_file(path: Path, text: str) -> ServeConfig:
    conf = ServeConfig(source=path.name)
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, eq, value = line.removeprefix("export ").partition("=")
        if not eq or not name.strip().isidentifier():
            raise ConfigError(f"{path}:{n}", "", "expected NAME=value (or a serve command line)")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        conf._set_env(name.strip(), value, f"{path.name}:{n}")
    return conf


def _typed(path: Path, kind: type, wanted: str, value: Any, dotted: str) -> Any:
    """`value` when it is of `kind` (absent: an empty one); ConfigError naming the path."""
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise ConfigError(str(path), dotted, f"expected {wanted}, got {value!r}")
    return value


def _from_manifest(path: Path, text: str) -> ServeConfig:
    try:
        docs = [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]
    except yaml.YAMLError as exc:
        raise ConfigError(str(path), "", f"invalid YAML: {getattr(exc, 'problem', exc)}") from None
    for n, doc in enumerate(docs):
        # Name the document only when there are several, so the path reads as in the file.
        at = f"document {n + 1}: " if len(docs) > 1 else ""
        spec = _typed(path, dict, "a mapping", doc.get("spec"), f"{at}spec")
        template = _typed(path, dict, "a mapping", spec.get("template"), f"{at}spec.template")
        pod_at = f"{at}spec.template.spec" if "template" in spec else f"{at}spec"
        pod = _typed(path, dict, "a mapping", template.get("spec"), pod_at) or spec
        for kind in ("initContainers", "containers"):
            listed = _typed(path, list, "a list", pod.get(kind), f"{pod_at}.{kind}")
            for i, container in enumerate(listed):
                if isinstance(container, dict) and _is_guard(container):
                    return _from_container(path, doc, kind, container, f"{pod_at}.{kind}.{i}")
    raise ConfigError(str(path), "", "no distill-guard container in this manifest")


def _is_guard(container: dict[str, Any]) -> bool:
    if container.get("name") == "distill-guard":
        return True
    command = container.get("command")
    words = [str(container.get("image", ""))]
    words += [str(w) for w in command] if isinstance(command, list) else []
    return any("distill-guard" in w for w in words)


def _from_container(
    path: Path, doc: dict[str, Any], kind: str, container: dict[str, Any], dotted: str
) -> ServeConfig:
    name = container.get("name", "?")
    conf = ServeConfig(source=f"{path.name} ({kind}/{name})")
    replicas = (doc.get("spec") or {}).get("replicas")
    conf.replicas = replicas if isinstance(replicas, int) else None
    where = f"{path.name} {kind}/{name} env"
    for i, item in enumerate(_typed(path, list, "a list", container.get("env"), f"{dotted}.env")):
        if not isinstance(item, dict) or "name" not in item:
            continue
        if "value" in item:
            value = str(item["value"])
        else:
            source = _typed(
                path, dict, "a mapping", item.get("valueFrom"), f"{dotted}.env.{i}.valueFrom"
            )
            value = f"<from {next(iter(source), 'unknown')}>"
        conf._set_env(str(item["name"]), value, where)
    words = [
        str(a)
        for part in ("command", "args")
        for a in _typed(path, list, "a list", container.get(part), f"{dotted}.{part}")
    ]
    conf._set_args(words, f"{path.name} {kind}/{name} args")
    return conf
