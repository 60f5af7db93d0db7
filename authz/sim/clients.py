"""Client fingerprints: the header set, header order, user agent and JSON style of an HTTP client.

A client is fixed when an account (or a campaign) is created, so its headers
are a stable fingerprint: the SDKs' `x-stainless-*` headers, their versions,
the operating system, and even how the body's JSON is spaced stay the same
from one request to the next.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

MESSAGES = "/v1/messages"
CHAT = "/v1/chat/completions"
ANTHROPIC_VERSION = "2023-06-01"
KEY = "{key}"  # where the secret goes in a header template


# JSON styles: (compact, ASCII only) -> encoder. Built once: json.dumps with options
# builds a new encoder on every call.
_ENCODERS = {
    (compact, ascii_only): json.JSONEncoder(
        separators=(",", ":") if compact else (", ", ": "), ensure_ascii=ascii_only
    )
    for compact in (False, True)
    for ascii_only in (False, True)
}


@dataclass(frozen=True, slots=True)
class Client:
    """One HTTP client as the server sees it."""

    family: str
    api: str  # "anthropic" (/v1/messages) or "openai" (/v1/chat/completions)
    headers: tuple[tuple[str, str], ...]  # lower-case names in sending order; KEY marks the key
    compact: bool  # JSON without spaces after separators (JavaScript, Go), else Python's
    ascii_only: bool  # non-ASCII escaped as \\uXXXX (Python's json default)

    @property
    def path(self) -> str:
        """The endpoint this client calls."""
        return MESSAGES if self.api == "anthropic" else CHAT

    @property
    def user_agent(self) -> str:
        """The user-agent header."""
        return dict(self.headers)["user-agent"]

    def headers_json(self, secret: str) -> str:
        """The request's headers as a JSON object, in sending order, carrying `secret`."""
        pairs = {name: value.replace(KEY, secret) for name, value in self.headers}
        return json.dumps(pairs, separators=(",", ":"))

    def body(self, fields: dict[str, Any]) -> str:
        """A request body as this client encodes it."""
        return _ENCODERS[self.compact, self.ascii_only].encode(fields)


_OS = (
    ("Linux", "x64"),
    ("MacOS", "arm64"),
    ("MacOS", "x64"),
    ("Windows", "x64"),
    ("Linux", "arm64"),
)
_CPYTHON = ("3.10.14", "3.11.9", "3.11.11", "3.12.4", "3.12.8", "3.13.1")
_NODE = ("v18.20.4", "v20.11.1", "v20.18.0", "v22.12.0")
_VERSIONS = {
    "anthropic-python": ("0.40.0", "0.42.0", "0.45.2", "0.49.0", "0.52.1", "0.55.0"),
    "anthropic-ts": ("0.32.1", "0.33.1", "0.36.3", "0.39.0", "0.40.1"),
    "openai-python": ("1.54.4", "1.58.1", "1.61.0", "1.66.3", "1.70.0"),
    "openai-node": ("4.71.1", "4.77.0", "4.85.1", "4.87.3"),
    "curl": ("7.81.0", "8.5.0", "8.7.1", "8.11.1"),
    "python-requests": ("2.28.2", "2.31.0", "2.32.3"),
    "python-httpx": ("0.25.2", "0.27.0", "0.27.2", "0.28.1"),
    "go": ("1.1", "2.0"),
    "aiohttp": ("3.8.6", "3.9.5", "3.10.10", "3.11.11"),
    "okhttp": ("4.9.3", "4.11.0", "4.12.0"),
}
# How often each family shows up among ordinary users.
FAMILY_WEIGHTS = {
    "anthropic-python": 24,
    "anthropic-ts": 12,
    "openai-python": 22,
    "openai-node": 12,
    "curl": 5,
    "python-requests": 9,
    "python-httpx": 6,
    "go": 4,
    "aiohttp": 4,
    "okhttp": 2,
}


def _stainless(
    rng: random.Random, lang: str, version: str, runtime: tuple[str, str]
) -> list[tuple[str, str]]:
    os_name, arch = rng.choice(_OS)
    out = [
        ("x-stainless-arch", arch),
        ("x-stainless-lang", lang),
        ("x-stainless-os", os_name),
        ("x-stainless-package-version", version),
        ("x-stainless-retry-count", "0"),
        ("x-stainless-runtime", runtime[0]),
        ("x-stainless-runtime-version", runtime[1]),
    ]
    if rng.random() < 0.5:
        out.append(("x-stainless-read-timeout", "600"))
    return out


def _key_header(api: str) -> tuple[str, str]:
    return ("x-api-key", KEY) if api == "anthropic" else ("authorization", "Bearer " + KEY)


def make_client(rng: random.Random, family: str | None = None) -> Client:
    """A client of `family` (else one drawn by popularity) with versions and OS from `rng`."""
    if family is None:
        family = rng.choices(list(FAMILY_WEIGHTS), list(FAMILY_WEIGHTS.values()))[0]
    version = rng.choice(_VERSIONS[family])
    json_type = ("content-type", "application/json")
    h: list[tuple[str, str]]
    compact, ascii_only = True, False
    if family == "anthropic-python":
        api, ascii_only, compact = "anthropic", True, False
        runtime = ("CPython", rng.choice(_CPYTHON))
        h = [
            ("accept", "application/json"),
            ("accept-encoding", "gzip, deflate"),
            ("anthropic-version", ANTHROPIC_VERSION),
            json_type,
            ("user-agent", f"Anthropic/Python {version}"),
            _key_header(api),
        ]
        h += _stainless(rng, "python", version, runtime)
    elif family == "anthropic-ts":
        api = "anthropic"
        h = [
            ("accept", "application/json"),
            ("anthropic-version", ANTHROPIC_VERSION),
            json_type,
            ("user-agent", f"Anthropic/JS {version}"),
            _key_header(api),
        ]
        h += _stainless(rng, "js", version, ("node", rng.choice(_NODE)))
    elif family == "openai-python":
        api, ascii_only, compact = "openai", True, False
        runtime = ("CPython", rng.choice(_CPYTHON))
        h = [
            ("accept", "application/json"),
            ("accept-encoding", "gzip, deflate"),
            _key_header(api),
            json_type,
            ("user-agent", f"OpenAI/Python {version}"),
        ]
        h += _stainless(rng, "python", version, runtime)
    elif family == "openai-node":
        api = "openai"
        h = [
            ("accept", "application/json"),
            json_type,
            ("user-agent", f"OpenAI/JS {version}"),
            _key_header(api),
        ]
        h += _stainless(rng, "js", version, ("node", rng.choice(_NODE)))
    else:
        api = rng.choice(("anthropic", "openai"))
        extra = [("anthropic-version", ANTHROPIC_VERSION)] if api == "anthropic" else []
        if family == "curl":
            h = [
                ("user-agent", f"curl/{version}"),
                ("accept", "*/*"),
                json_type,
                _key_header(api),
                *extra,
            ]
        elif family == "python-requests":
            ascii_only, compact = True, False
            h = [
                ("user-agent", f"python-requests/{version}"),
                ("accept-encoding", "gzip, deflate"),
                ("accept", "*/*"),
                _key_header(api),
                *extra,
                json_type,
            ]
        elif family == "python-httpx":
            ascii_only, compact = True, False
            h = [
                ("accept", "*/*"),
                ("accept-encoding", "gzip, deflate"),
                ("user-agent", f"python-httpx/{version}"),
                _key_header(api),
                *extra,
                json_type,
            ]
        elif family == "go":
            # Go writes the user agent first, then the rest sorted, and adds gzip itself.
            named = sorted([_key_header(api), *extra, json_type])
            h = [("user-agent", f"Go-http-client/{version}"), *named, ("accept-encoding", "gzip")]
        elif family == "aiohttp":
            ascii_only, compact = True, False
            py = rng.choice(_CPYTHON).rsplit(".", 1)[0]
            h = [
                ("user-agent", f"Python/{py} aiohttp/{version}"),
                ("accept", "*/*"),
                ("accept-encoding", "gzip, deflate"),
                _key_header(api),
                *extra,
                json_type,
            ]
        else:  # okhttp
            h = [
                _key_header(api),
                *extra,
                ("content-type", "application/json; charset=utf-8"),
                ("accept-encoding", "gzip"),
                ("user-agent", f"okhttp/{version}"),
            ]
    return Client(family, api, tuple(h), compact, ascii_only)
