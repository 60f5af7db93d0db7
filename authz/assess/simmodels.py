"""Fit the simulated traffic's model names to the models the deployment's tiers offer.

The simulator asks for its own model names (`small-2`, `frontier-3`, the
pivot's new model) whatever the account's tier. Against a deployment whose
tiers name other models, or offer fewer, those requests are denied
`model_not_allowed`, and the exercise would score the model list instead of
the controls it is meant to exercise. So before the replay each request whose
tier does not offer its model is moved to a model that the tier does offer,
preferring the simulator's own names; the count is reported.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import NamedTuple

from authz.accounts import load_accounts_file
from authz.keys import KeyHasher, KeyProblem, extract_key
from authz.rules import CompiledTier, Rules
from authz.sim.render import FRONTIER, SMALL


class Fitted(NamedTuple):
    """How many requests asked for a model their tier offers, were moved, or could not be."""

    kept: int
    moved: int
    unfit: int  # the tier offers none of the simulator's models: left to be denied


def _choice(tier: CompiledTier, model: str, candidates: tuple[str, ...]) -> str | None:
    if tier.allows_model(model):
        return model
    return next((m for m in candidates if tier.allows_model(m)), None)


def fit_models(rules: Rules, work: Path, new_model: str) -> Fitted:
    """Rewrite `work/traffic.jsonl` so every request asks for a model its tier offers."""
    hasher = KeyHasher()  # the simulator's accounts hold plain SHA-256 digests
    tier_of = {
        k.sha256: entry.tier
        for entry in load_accounts_file(work / "accounts.jsonl")
        for k in entry.keys
        if k.sha256 is not None
    }
    candidates = (SMALL, FRONTIER, new_model)
    kept = moved = unfit = 0
    source, fitted = work / "traffic.jsonl", work / "traffic.fitted.jsonl"
    with source.open(encoding="utf-8") as lines, fitted.open("w", encoding="utf-8") as out:
        for text in lines:
            record = json.loads(text)
            try:
                key = extract_key(record.get("headers") or {}, rules.key_headers)
            except KeyProblem:
                key = None
            tier = rules.tiers.get(tier_of.get(hasher.digest(key), "")) if key else None
            try:
                body = json.loads(record.get("body") or "null")
            except (TypeError, ValueError):
                body = None  # a body the simulator broke on purpose stays broken
            model = body.get("model") if isinstance(body, dict) else None
            if tier is None or body is None or not isinstance(model, str):
                out.write(text)  # nothing to fit: replay decides it as it is
                continue
            choice = _choice(tier, model, candidates)
            if choice is None:
                unfit += 1
            elif choice == model:
                kept += 1
            else:
                moved += 1
                body["model"] = choice
                record["body"] = json.dumps(body, separators=(",", ":"))
                out.write(json.dumps(record, separators=(",", ":")) + "\n")
                continue
            out.write(text)
    os.replace(fitted, source)
    return Fitted(kept, moved, unfit)
