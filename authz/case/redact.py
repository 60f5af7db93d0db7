"""Template examples for a case: the masked scaffold by default, the raw prompt when asked.

The detect phase already turns every prompt into its scaffold (names, code,
quotes, numbers, paths, URLs, e-mail addresses and ids masked; lower case;
punctuation dropped) to name its template. That scaffold is what a template
*is*, so it is the natural redacted example: it shows the campaign's
instructions without the slot values that may identify a person. It is not
anonymisation: ordinary words stay as they were written (docs/case.md).

Examples need the request content (--audit-request-content); without it the
case shows template hashes only.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from authz.detect.features import DEFAULT_LIMIT, prompt_text, scaffold, template_id

EXAMPLE_CHARS = 600
# A prompt with one of each slot the scaffold masks. Its template id names the
# masking in force: two deployments whose masking versions differ would give
# different template hashes for the same prompt, so shared template hashes are
# comparable only between equal versions.
_PROBE = (
    "Ask Ada Lovelace at ada@example.org to run `make test` on ./src/app.py, "
    'fetch https://example.org/x?y=1, quote "verbatim text", use id '
    "3f2a9c7e1b4d5a6f and 42 retries:\n```\nprint(1)\n```\nThen explain step by step."
)


def masking_version() -> str:
    """The version of the scaffold masking in force: `scaffold-` and the probe's template id."""
    return "scaffold-" + template_id(scaffold(_PROBE))


def example(fields: Mapping[str, Any], *, unredacted: bool) -> dict[str, Any] | None:
    """An example of the record's template, or None when the record kept no usable prompt."""
    content = fields.get("content")
    detection = fields.get("detection")
    if not isinstance(content, Mapping) or not isinstance(detection, Mapping):
        return None
    body = _body(content.get("body"))
    if body is None:
        return None
    limit = int(detection.get("prompt_chars") or DEFAULT_LIMIT)  # what the detect phase read
    text = prompt_text(body, limit)
    if not text:
        return None
    skeleton = scaffold(text)
    shown = text if unredacted else skeleton
    return {
        "kind": "raw" if unredacted else "scaffold",
        "text": shown[:EXAMPLE_CHARS],
        "cut": len(shown) > EXAMPLE_CHARS,
        # False when the body kept is not what the detect phase hashed (cut at the cap).
        "matches_template": template_id(skeleton) == detection.get("template"),
        "decision_id": str(fields.get("decision_id", "")),
    }


def _body(encoded: object) -> Mapping[str, Any] | None:
    """The JSON object of a kept body (base64 in the record), or None."""
    if not isinstance(encoded, str):
        return None
    try:
        parsed = json.loads(base64.b64decode(encoded, validate=True))
    except (binascii.Error, ValueError):
        return None
    return parsed if isinstance(parsed, Mapping) else None
