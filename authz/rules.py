"""The rules file: what platform engineers edit (tiers now; geo, limits, detectors later).

Parsed strictly (an unknown key is an error naming file, path and problem),
compiled once per load into an immutable snapshot, and swapped atomically by
`authz.reload`. `distill-guard rules check` uses this very loader.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from pydantic import Field, ValidationError, field_validator

from authz.clientip import ClientIpPolicy
from authz.detect.rules import DetectionRules
from authz.errors import ConfigError, format_validation_error
from authz.events.rules import EventRules
from authz.events.rules import reference_problem as event_reference_problem
from authz.jurisdiction import (
    ClientIpRules,
    Jurisdiction,
    JurisdictionRules,
    compile_jurisdiction,
    reference_problem,
)
from authz.metering.rules import CompiledLimits, LimitRules, compile_limits
from authz.schema import StrictModel

_HEADER_NAME = re.compile(r"^[a-z0-9!#$%&'*+.^_`|~-]+$")


class IdentityRules(StrictModel):
    """Where API keys are read from, and whether they reach the model server."""

    key_headers: list[str] = Field(
        default=["authorization", "x-api-key"],
        min_length=1,
        description="Headers that may carry the API key, tried in order. "
        "`authorization` expects the Bearer scheme.",
    )
    forward_key: bool = Field(
        default=False,
        description="Pass the key header on to the model server. Off by default: "
        "the model server learns the caller from governance headers instead.",
    )

    @field_validator("key_headers")
    @classmethod
    def _lower_case_names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{name!r} is not a lower-case HTTP header name")
        return names


class TierRules(StrictModel):
    """What accounts on one tier may do."""

    description: str = ""
    allow_unverified: bool = Field(
        default=False,
        description="Whether accounts whose KYC status is not `verified` may use this tier.",
    )
    paths: list[str] = Field(
        default=["*"],
        min_length=1,
        description="Request paths (glob patterns, query string excluded) this tier may call.",
    )
    models: list[str] = Field(
        default=["*"],
        min_length=1,
        description="Models (glob patterns) this tier may call, as named by the request body "
        "`model` member.",
    )
    reasoning: Literal["full", "summary", "none"] = Field(
        default="full",
        description="How much reasoning the model server may expose to this tier.",
    )
    max_thinking_tokens: int | None = Field(
        default=None,
        ge=0,
        description="Cap on thinking (reasoning) tokens the model server may spend; null: no cap.",
    )
    logprobs: bool = Field(
        default=True, description="Whether the model server may return log probabilities."
    )
    watermark_key: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_.:-]{1,64}$",
        description="Id of the watermark key the model server signs this tier's output with "
        "(default: `tier-<name>`). Restricted clusters get their own (detection.restrict).",
    )
    limits: LimitRules = Field(
        default_factory=LimitRules,
        description="Rate limits, token budgets, volume anomalies and the store failure policy.",
    )


class RulesDocument(StrictModel):
    """The whole rules file."""

    version: str = Field(
        default="",
        max_length=64,
        description="A label for this revision of the rules; the content hash is added to it.",
    )
    mode: Literal["enforce", "dry_run"] = Field(
        default="enforce",
        description="`dry_run` computes and records every real decision, then allows the request.",
    )
    identity: IdentityRules = IdentityRules()
    client_ip: ClientIpRules = ClientIpRules()
    tiers: dict[str, TierRules] = Field(description="Tiers by name; accounts name their tier.")
    jurisdiction: JurisdictionRules = JurisdictionRules()
    detection: DetectionRules = Field(
        default_factory=DetectionRules,
        description="Extraction-pattern detection, graduated actions and restricted output.",
    )
    events: EventRules | None = Field(
        default=None,
        description="Reportable events (docs/events.md); absent: nothing is reported.",
    )

    @field_validator("tiers")
    @classmethod
    def _tier_names(cls, tiers: dict[str, TierRules]) -> dict[str, TierRules]:
        if not tiers:
            raise ValueError("define at least one tier")
        for name in tiers:
            if not re.match(r"^[a-z0-9][a-z0-9_-]{0,63}$", name):
                raise ValueError(f"tier name {name!r} must match [a-z0-9][a-z0-9_-]*")
        return tiers


@dataclass(frozen=True, slots=True)
class CompiledTier:
    """A tier with its glob patterns compiled."""

    name: str
    allow_unverified: bool
    paths: re.Pattern[str]
    models: re.Pattern[str]
    restricts_models: bool
    reasoning: str
    max_thinking_tokens: int | None
    logprobs: bool
    watermark_key: str
    limits: CompiledLimits

    def allows_path(self, path: str) -> bool:
        """Whether the tier may call this path (query string ignored)."""
        return self.paths.fullmatch(path.partition("?")[0]) is not None

    def allows_model(self, model: str) -> bool:
        """Whether the tier may call this model."""
        return self.models.fullmatch(model) is not None


@dataclass(frozen=True, slots=True)
class Rules:
    """One immutable, compiled rules snapshot; a request uses exactly one."""

    version: str
    source: str
    mode: str
    key_headers: tuple[str, ...]
    forward_key: bool
    tiers: dict[str, CompiledTier]
    client_ip: ClientIpPolicy
    jurisdiction: Jurisdiction
    detection: DetectionRules
    events: EventRules | None = None


def _globs(patterns: list[str]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def compile_rules(doc: RulesDocument, *, source: str, digest: str) -> Rules:
    """Turn a validated document into the snapshot the pipeline reads."""
    version = f"{doc.version}@{digest[:12]}" if doc.version else digest[:12]
    tiers = {
        name: CompiledTier(
            name=name,
            allow_unverified=t.allow_unverified,
            paths=_globs(t.paths),
            models=_globs(t.models),
            restricts_models=t.models != ["*"],
            reasoning=t.reasoning,
            max_thinking_tokens=t.max_thinking_tokens,
            logprobs=t.logprobs,
            watermark_key=t.watermark_key or f"tier-{name}",
            limits=compile_limits(t.limits),
        )
        for name, t in doc.tiers.items()
    }
    return Rules(
        version=version,
        source=source,
        mode=doc.mode,
        key_headers=tuple(doc.identity.key_headers),
        forward_key=doc.identity.forward_key,
        tiers=tiers,
        client_ip=doc.client_ip.compile(),
        jurisdiction=compile_jurisdiction(doc.jurisdiction),
        detection=doc.detection,
        events=doc.events,
    )


def load_rules(path: Path) -> Rules:
    """Read, validate and compile a rules file. Raises ConfigError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror or exc}") from None
    return parse_rules(data, source=str(path))


def parse_rules(data: bytes, *, source: str) -> Rules:
    """Validate and compile rules from bytes; `source` names them in errors."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, "", f"not UTF-8 (byte {exc.start})") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        raw: Any = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(source, "", "invalid YAML: nested too deeply") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(where, "", f"invalid YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise ConfigError(source, "", "expected a mapping at the top level")
    lines = _line_index(node)
    try:
        doc = RulesDocument.model_validate(raw)
    except ValidationError as exc:
        raise format_validation_error(source, exc, lines=lines) from None
    dangling = reference_problem(doc.jurisdiction, set(doc.tiers))
    if dangling is not None:
        _dangling(source, lines, "jurisdiction." + dangling[0], dangling[1])
    for tier in doc.detection.tiers:
        if tier not in doc.tiers:
            _dangling(source, lines, f"detection.tiers.{tier}", f"no tier named {tier!r}")
    if doc.events is not None:
        actions = {rule.id: rule.action for rule in doc.jurisdiction.rules}
        dangling = event_reference_problem(doc.events, actions)
        if dangling is not None:
            _dangling(source, lines, "events." + dangling[0], dangling[1])
    return compile_rules(doc, source=source, digest=hashlib.sha256(data).hexdigest())


def _dangling(source: str, lines: dict[str, int], path: str, problem: str) -> NoReturn:
    """Raise the ConfigError of a reference to something the file does not define."""
    line = lines.get(path)
    raise ConfigError(f"{source}:{line}" if line else source, path, problem)


def _line_index(node: yaml.Node | None) -> dict[str, int]:
    """Map dotted paths of a YAML document to their 1-based line numbers."""
    lines: dict[str, int] = {}

    def walk(n: yaml.Node, path: str) -> None:
        lines.setdefault(path, n.start_mark.line + 1)
        if isinstance(n, yaml.MappingNode):
            for key, value in n.value:
                child = f"{path}.{key.value}" if path else str(key.value)
                lines[child] = key.start_mark.line + 1
                walk(value, child)
        elif isinstance(n, yaml.SequenceNode):
            for i, item in enumerate(n.value):
                walk(item, f"{path}.{i}" if path else str(i))

    if node is not None:
        walk(node, "")
    return lines


def json_schema() -> str:
    """The JSON Schema of the rules file, for editors."""
    schema = RulesDocument.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "distill-guard rules"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"
