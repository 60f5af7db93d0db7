"""Extraction-pattern detection: per-request features (see docs/detection.md)."""

from __future__ import annotations

from authz.detect.features import (
    DEFAULT_LIMIT,
    Elicitation,
    RequestFeatures,
    client_fingerprint,
    elicitation,
    extract,
    hamming,
    network_key,
    prompt_text,
    scaffold,
    simhash,
    template_id,
)

__all__ = [
    "DEFAULT_LIMIT",
    "Elicitation",
    "RequestFeatures",
    "client_fingerprint",
    "elicitation",
    "extract",
    "hamming",
    "network_key",
    "prompt_text",
    "scaffold",
    "simhash",
    "template_id",
]
