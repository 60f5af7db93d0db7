"""Process settings of event reporting (flags of `distill-guard analyze`, or the environment).

What is reportable lives in the rules file (`events:`); where events go is a
setting of the process that reports them:

    --events-webhook URL               DISTILL_GUARD_EVENTS_WEBHOOK
    --events-webhook-secret-file FILE  DISTILL_GUARD_EVENTS_WEBHOOK_SECRET_FILE
    --events-webhook-timeout/-budget/-queue
    --events-chain NAME                chain of the event records [events-<host>]
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from authz.errors import ConfigError
from authz.events.webhook import WebhookSettings, read_secret
from authz.settings import ENV_PREFIX

WEBHOOK_ENV = ENV_PREFIX + "EVENTS_WEBHOOK"
SECRET_ENV = ENV_PREFIX + "EVENTS_WEBHOOK_SECRET_FILE"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the event reporting flags."""
    group = parser.add_argument_group(
        "reportable events (with a rules file that has an `events` section; docs/events.md)"
    )
    group.add_argument(
        "--events-webhook",
        metavar="URL",
        default=os.environ.get(WEBHOOK_ENV),
        help=f"POST each event here, signed [env {WEBHOOK_ENV}]",
    )
    group.add_argument(
        "--events-webhook-secret-file",
        metavar="FILE",
        default=os.environ.get(SECRET_ENV),
        help=f"file holding the HMAC signing secret, 16 bytes or more [env {SECRET_ENV}]",
    )
    group.add_argument(
        "--events-webhook-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="one attempt's timeout [default: 5]",
    )
    group.add_argument(
        "--events-webhook-budget",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="time one event is retried for before it is dropped (and counted) [default: 300]",
    )
    group.add_argument(
        "--events-webhook-queue",
        type=int,
        default=1000,
        metavar="N",
        help="events waiting for the webhook at most; more are dropped and counted [default: 1000]",
    )
    group.add_argument(
        "--events-chain",
        metavar="NAME",
        help="chain name of the event records in the audit stream [default: events-<host>]",
    )


def webhook_settings(ns: argparse.Namespace) -> WebhookSettings | None:
    """The webhook the flags name, or None. Raises ConfigError."""
    if not ns.events_webhook:
        if ns.events_webhook_secret_file:
            raise ConfigError("--events-webhook-secret-file", "", "needs --events-webhook")
        return None
    if not ns.events_webhook_secret_file:
        raise ConfigError(
            "--events-webhook", "", "needs --events-webhook-secret-file: events are always signed"
        )
    for flag, value in (
        ("--events-webhook-timeout", ns.events_webhook_timeout),
        ("--events-webhook-budget", ns.events_webhook_budget),
        ("--events-webhook-queue", ns.events_webhook_queue),
    ):
        if value <= 0:
            raise ConfigError(flag, "", f"must be greater than 0 (got {value})")
    return WebhookSettings(
        url=ns.events_webhook,
        secret=read_secret(Path(ns.events_webhook_secret_file)),
        timeout=ns.events_webhook_timeout,
        budget=ns.events_webhook_budget,
        queue=ns.events_webhook_queue,
    )
