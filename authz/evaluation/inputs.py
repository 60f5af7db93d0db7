"""The three inputs of `evaluate`: labels (ground truth), decisions (the replay), the scenario.

Labels and the scenario are small and read whole. Decisions can run to
millions of lines and are read one line at a time. A line that cannot be used
is never fatal: it is counted, the first few are kept with their line number,
and the line is skipped. Only a file that cannot be opened at all (or a
scenario that is not a JSON object) stops the command.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from authz.errors import ConfigError

CLASSES = ("benign", "campaign")
ACTIONS = ("allow", "deny")
EXPOSURES = ("full", "summary", "none", None)
# Decision fields that decide how a line is counted; the others are optional.
DECISION_FIELDS = ("ts", "account", "action", "exposure", "restricted", "reason")
LABEL_FIELDS = ("account", "class", "group")
_NUMBER = (int, float)  # exact types: a JSON true is a bool, not a number
KEEP_PROBLEMS = 20
_decode = json.JSONDecoder().decode  # json.loads without its per-call argument handling


@dataclass(frozen=True, slots=True)
class Label:
    """What the simulator knows about one account."""

    account: str
    campaign: bool
    group: str  # the campaign id, or the benign group (individual, nat, ci, researcher, ...)
    hard_negative: bool


@dataclass(frozen=True, slots=True)
class Scenario:
    """The parts of simulate's scenario.json that evaluate uses."""

    new_model: str | None = None
    pivot_ts: float | None = None

    @property
    def has_pivot(self) -> bool:
        """Both the new model and the pivot time are known."""
        return self.new_model is not None and self.pivot_ts is not None


class Decision(NamedTuple):
    """One replayed decision, reduced to what the figures need.

    A NamedTuple rather than a frozen dataclass: one is built per line, and a
    frozen dataclass's __init__ (object.__setattr__ per field) costs more than
    the tallying it feeds.
    """

    line: int
    ts: float
    account: str | None
    model: str | None
    full: bool  # allowed, full reasoning exposure, not restricted
    restricted: bool  # restricted flag set, or denied
    denied: bool
    reason: str
    rule: str | None
    cluster: str | None


@dataclass(frozen=True, slots=True)
class Problem:
    """A skipped line: which file, which line, what was wrong."""

    file: str
    line: int
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class Problems:
    """Every skipped line is counted (per file and kind); the first few are kept."""

    def __init__(self, keep: int = KEEP_PROBLEMS) -> None:
        self.keep = keep
        self.first: list[Problem] = []
        self.by_kind: dict[str, Counter[str]] = {}  # file -> kind -> lines

    def add(self, file: str, line: int, kind: str, message: str) -> None:
        """Count one skipped line."""
        self.by_kind.setdefault(file, Counter())[kind] += 1
        if len(self.first) < self.keep:
            self.first.append(Problem(file, line, kind, message))

    def kinds(self, file: str) -> dict[str, int]:
        """Skipped lines of `file` by kind, most frequent first."""
        return dict(self.by_kind.get(file, Counter()).most_common())

    def count(self, file: str) -> int:
        """Skipped lines of `file`."""
        return sum(self.by_kind.get(file, Counter()).values())


class _Bad(Exception):
    """A line is unusable; raised and caught only inside this module."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def _open_error(path: Path, exc: OSError) -> ConfigError:
    return ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}")


def _json_line(raw: bytes) -> Any:
    try:
        # decoded here: json.loads(bytes) would guess UTF-16 from a stray byte-order mark
        return _decode(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise _Bad("not_json", f"not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise _Bad("not_json", f"not JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise _Bad("not_json", "not JSON (nested too deeply)") from None


def _require(obj: Any, fields: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise _Bad("not_object", f"not a JSON object (a {type(obj).__name__})")
    missing = [f for f in fields if f not in obj]
    if missing:
        raise _Bad("missing_field", "missing " + ", ".join(repr(f) for f in missing))
    return obj


def _bad_value(field: str, value: Any, wanted: str) -> _Bad:
    shown = json.dumps(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return _Bad("bad_value", f"{field!r} must be {wanted}, not {shown}")


def _label(obj: Any) -> Label:
    data = _require(obj, LABEL_FIELDS)
    account, cls, group = data["account"], data["class"], data["group"]
    hard_negative = data.get("hard_negative", False)
    if not isinstance(account, str) or not account:
        raise _bad_value("account", account, "a non-empty string")
    if cls not in CLASSES:
        raise _bad_value("class", cls, '"benign" or "campaign"')
    if not isinstance(group, str) or not group:
        raise _bad_value("group", group, "a non-empty string")
    if not isinstance(hard_negative, bool):
        raise _bad_value("hard_negative", hard_negative, "true or false")
    return Label(account, cls == "campaign", group, hard_negative and cls == "benign")


def read_labels(path: Path, problems: Problems) -> dict[str, Label]:
    """All usable label lines by account; bad and duplicate lines go to `problems`."""
    labels: dict[str, Label] = {}
    try:
        with path.open("rb") as f:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    label = _label(_json_line(raw))
                except _Bad as bad:
                    problems.add(str(path), number, bad.kind, bad.message)
                    continue
                if label.account in labels:
                    problems.add(
                        str(path),
                        number,
                        "duplicate_account",
                        f"account {label.account!r} is labelled twice; the first label counts",
                    )
                    continue
                labels[label.account] = label
    except OSError as exc:
        raise _open_error(path, exc) from None
    return labels


def read_scenario(path: Path | None) -> Scenario:
    """`new_model` and `pivot_ts` (or `pivot`) from scenario.json; empty without a file."""
    if path is None:
        return Scenario()
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise _open_error(path, exc) from None
    except (ValueError, RecursionError) as exc:
        raise ConfigError(str(path), "", f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", "must be a JSON object")
    new_model = data.get("new_model")
    pivot_ts = data.get("pivot_ts")
    if new_model is not None and not isinstance(new_model, str):
        raise ConfigError(str(path), "new_model", "must be a string")
    if pivot_ts is not None and (
        isinstance(pivot_ts, bool)
        or not isinstance(pivot_ts, int | float)
        or not math.isfinite(pivot_ts)
    ):
        raise ConfigError(str(path), "pivot_ts", "must be a number (epoch seconds)")
    return Scenario(new_model, None if pivot_ts is None else float(pivot_ts))


def _decision(obj: Any, number: int) -> Decision:
    # Hot path: runs once per line of a file of millions. JSON yields only dict, list,
    # str, int, float, bool and None, so exact type tests are safe (and keep bools out).
    if type(obj) is not dict:
        raise _Bad("not_object", f"not a JSON object (a {type(obj).__name__})")
    try:
        ts, account, action = obj["ts"], obj["account"], obj["action"]
        exposure, restricted, reason = obj["exposure"], obj["restricted"], obj["reason"]
    except KeyError:
        _require(obj, DECISION_FIELDS)  # raises, naming every missing field
        raise
    rule, model, signals = obj.get("rule"), obj.get("model"), obj.get("signals")
    if type(ts) not in _NUMBER or not math.isfinite(ts):
        raise _bad_value("ts", ts, "a number (epoch seconds)")
    if account is not None and type(account) is not str:
        raise _bad_value("account", account, "a string or null")
    if action not in ACTIONS:
        raise _bad_value("action", action, '"allow" or "deny"')
    if exposure not in EXPOSURES:
        raise _bad_value("exposure", exposure, '"full", "summary", "none" or null')
    if type(restricted) is not bool:
        raise _bad_value("restricted", restricted, "true or false")
    if type(reason) is not str:
        raise _bad_value("reason", reason, "a string")
    if rule is not None and type(rule) is not str:
        raise _bad_value("rule", rule, "a string or null")
    if model is not None and type(model) is not str:
        raise _bad_value("model", model, "a string or null")
    cluster = None
    if signals is not None:
        if type(signals) is not dict:
            raise _bad_value("signals", signals, "an object")
        cluster = signals.get("cluster")
        if cluster is not None and type(cluster) is not str:
            if type(cluster) is not int:
                raise _bad_value("signals.cluster", cluster, "a string, a number or null")
            cluster = str(cluster)
    denied = action == "deny"
    return Decision(
        number,
        float(ts),
        account,
        model,
        not denied and exposure == "full" and not restricted,  # full
        restricted or denied,  # restricted
        denied,
        reason,
        rule,
        cluster,
    )


def iter_decisions(path: Path, problems: Problems) -> Iterator[Decision]:
    """The usable decisions of a JSON-lines file, in file order; bad lines go to `problems`."""
    name = str(path)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise _open_error(path, exc) from None
    with f:
        try:
            for number, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    decision = _decision(_json_line(raw), number)
                except _Bad as bad:
                    problems.add(name, number, bad.kind, bad.message)
                    continue
                yield decision
        except OSError as exc:
            raise _open_error(path, exc) from None
