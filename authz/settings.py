"""Process settings: read once at start from flags, each with a DISTILL_GUARD_* variable.

Settings are how the process runs (addresses, files, stores, budgets); what it
decides lives in the hot-reloaded rules file. The two are never mixed.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import MISSING, Field, dataclass, fields
from pathlib import Path

ENV_PREFIX = "DISTILL_GUARD_"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything `distill-guard serve` needs to start."""

    rules: Path
    listen: str = "127.0.0.1:9191"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    health_listen: str | None = None
    accounts: Path | None = None
    store: str = "memory://"
    key_pepper_file: Path | None = None
    geoip: Path | None = None
    asn: Path | None = None
    admin_listen: str = "127.0.0.1:9192"
    admin_token_file: Path | None = None
    check_budget: float = 0.2
    store_timeout: float = 0.05
    registry_cache_ttl: float = 5.0
    reload_interval: float = 2.0
    max_body_bytes: int = 1 << 20
    grace: float = 5.0
    metrics_listen: str | None = None
    log_level: str = "info"
    audit: str = "stdout"
    audit_chain: str = ""
    audit_stream: str = "dg:audit"
    audit_stream_maxlen: int = 10_000_000
    audit_queue: int = 10_000
    audit_backlog: int = 100_000
    audit_request_content: bool = False
    audit_request_content_bytes: int = 65_536

    def pepper(self) -> bytes | None:
        """The key pepper (HMAC secret), if one is configured."""
        if self.key_pepper_file is None:
            return None
        return self.key_pepper_file.read_bytes().strip() or None

    def admin_token(self) -> str | None:
        """The Admin API bearer token; the Admin API is off without one."""
        if self.admin_token_file is not None:
            return self.admin_token_file.read_text().strip() or None
        return os.environ.get(ENV_PREFIX + "ADMIN_TOKEN") or None


_HELP = {
    "rules": "rules file (YAML), hot-reloaded",
    "listen": "ext_authz gRPC address HOST:PORT (port 0 picks a free one)",
    "tls_cert": "server certificate (PEM, leaf first) for the ext_authz and Admin ports; "
    "with --tls-key they speak TLS instead of plaintext; reloaded when it changes (docs/tls.md)",
    "tls_key": "private key (PEM, unencrypted) of --tls-cert, reloaded with it",
    "tls_client_ca": "CA certificates (PEM) that client certificates must chain to: set, the "
    "ext_authz port requires and verifies one (mutual TLS); reloaded when it changes",
    "health_listen": "extra plaintext address HOST:PORT serving only grpc.health.v1, for "
    "probes that cannot present a client certificate (off when unset)",
    "accounts": "accounts file (JSON lines or YAML), hot-reloaded",
    "store": "memory:// (embedded, one process) or redis://HOST:PORT/DB",
    "key_pepper_file": "file holding the HMAC pepper for key digests (from a Secret)",
    "geoip": "MaxMind-format country (or city) database, hot-reloaded",
    "asn": "MaxMind-format ASN database, hot-reloaded (optional)",
    "admin_listen": "Admin gRPC address HOST:PORT (served only with an admin token)",
    "admin_token_file": f"file holding the Admin API bearer token (or set {ENV_PREFIX}ADMIN_TOKEN)",
    "check_budget": "seconds a check may take before it fails closed (keep below Envoy's timeout)",
    "store_timeout": "seconds one store call may take",
    "registry_cache_ttl": "seconds a Redis key lookup is cached in-process (revocation delay)",
    "reload_interval": "seconds between checks of the rules and accounts files",
    "max_body_bytes": "bytes of a request body examined at most",
    "grace": "seconds in-flight checks get to finish on SIGTERM",
    "metrics_listen": "Prometheus /metrics address HOST:PORT (off when unset)",
    "log_level": "debug, info, warning or error",
    "audit": "audit sinks, comma-separated: stdout, jsonl:PATH, redis (the --store Redis), "
    "redis://HOST:PORT/DB, or none (docs/audit.md)",
    "audit_chain": "name of this process's audit hash chain (empty: the host name)",
    "audit_stream": "Redis stream the redis audit sinks append to",
    "audit_stream_maxlen": "approximate number of entries the audit stream keeps",
    "audit_queue": "decisions the audit queue holds; more are dropped and counted",
    "audit_backlog": "records each failing audit sink holds while it retries",
    "audit_request_content": "keep each request's headers (minus keys and cookies), path and "
    "body in its audit record, for replay; prompts are personal data (docs/audit.md)",
    "audit_request_content_bytes": "bytes of a request body an audit record keeps at most "
    "(with --audit-request-content)",
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value not in _TRUE | _FALSE:
        raise ValueError(f"{text!r} is not a boolean")
    return value in _TRUE


def _converter(f: Field[object]) -> Callable[[str], object]:
    kind = str(f.type)
    if "Path" in kind:
        return Path
    if kind == "float":
        return float
    if kind == "int":
        return int
    if kind == "bool":
        return _boolean
    return str


def convert_setting(name: str, text: str) -> object:
    """`text` converted as serve converts setting `name`; ValueError when serve would refuse it."""
    return _converter(next(f for f in fields(Settings) if f.name == name))(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; its default comes from DISTILL_GUARD_<NAME> or the field.

    Values are converted by argparse, so a bad number is a usage error naming the flag.
    """
    for f in fields(Settings):
        env = ENV_PREFIX + f.name.upper()
        convert = _converter(f)
        from_env = os.environ.get(env)
        default = None
        if from_env is not None:
            try:
                default = convert(from_env)
            except ValueError:
                parser.error(f"{env}={from_env!r} is not a valid {f.type}")
        shown = "" if f.default in (MISSING, None, "") else f"; default {f.default}"
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{_HELP[f.name]} [env {env}{shown}]"
        if convert is _boolean:
            # A switch: --name turns it on, --no-name off (over the environment).
            parser.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=default,
                help=help_text,
            )
            continue
        parser.add_argument(
            flag,
            dest=f.name,
            type=convert,
            default=default,
            required=f.default is MISSING and from_env is None,
            help=help_text,
        )


def from_namespace(ns: argparse.Namespace) -> Settings:
    """Build Settings from parsed flags; unset flags keep the field defaults."""
    values = {f.name: getattr(ns, f.name) for f in fields(Settings)}
    return Settings(**{k: v for k, v in values.items() if v is not None})
