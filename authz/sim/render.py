"""One line of traffic.jsonl: address, path, headers and body of a request at a given time.

Lines are rendered in time order, so every random stream here is consumed in
one fixed order and the output is reproducible. Benign accounts draw from one
stream, each campaign from its own (and its proxies from another), so a
campaign knob such as `paraphrase` changes only that campaign's text.
"""

from __future__ import annotations

import random
from json.encoder import encode_basestring
from typing import Any

from authz.sim.benign_text import ci_prompt, individual_prompt, researcher_prompt
from authz.sim.campaign import Campaign
from authz.sim.clients import Client
from authz.sim.draw import pick
from authz.sim.population import SimAccount

SMALL, FRONTIER = "small-2", "frontier-3"
PIVOT_RAMP = 12 * 3600  # the campaign moves 90% of its traffic to a new model in this time
_REPLIES = (
    "Sure! Here are a few ideas to get you started.",
    "Good question. In short: it depends on your situation, but here is an overview.",
    "Here is a draft you can edit.",
    "The main difference comes down to how each one is used.",
)


def _ms_text(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"


def _messages(text: str, history: tuple[str, str] | None) -> list[dict[str, str]]:
    msgs = []
    if history is not None:
        msgs = [
            {"role": "user", "content": history[0]},
            {"role": "assistant", "content": history[1]},
        ]
    msgs.append({"role": "user", "content": text})
    return msgs


def anthropic_body(
    model: str,
    max_tokens: int,
    text: str,
    *,
    system: str | None = None,
    thinking: int = 0,
    history: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A Messages API body; `thinking` is the budget (0: none), always below max_tokens."""
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": _messages(text, history),
    }
    if system:
        body["system"] = system
    if thinking:
        body["thinking"] = {"type": "enabled", "budget_tokens": thinking}
    return body


def openai_body(
    model: str,
    text: str,
    *,
    system: str | None = None,
    effort: str | None = None,
    n: int = 1,
    top_logprobs: int = 0,
    max_completion: int = 0,
    history: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """A Chat Completions body with only the optional members that are set."""
    msgs = _messages(text, history)
    if system:
        msgs.insert(0, {"role": "system", "content": system})
    body: dict[str, Any] = {"model": model, "messages": msgs}
    if effort:
        body["reasoning_effort"] = effort
    if n > 1:
        body["n"] = n
    if top_logprobs:
        body["logprobs"] = True
        body["top_logprobs"] = top_logprobs
    if max_completion:
        body["max_completion_tokens"] = max_completion
    return body


class Renderer:
    """Turns (time, account) into traffic lines."""

    def __init__(
        self,
        seed: int,
        campaigns: list[Campaign],
        *,
        new_model: str,
        pivot: int,
        paraphrase: float,
        cover: float,
    ) -> None:
        def stream(name: str) -> random.Random:
            return random.Random(f"distill-guard-sim/{seed}/{name}")

        self.benign = stream("benign-render")
        self.campaigns = {c.index: c for c in campaigns}
        self.text_rng = {c.index: stream(f"{c.id}-render") for c in campaigns}
        self.proxy_rng = {c.index: stream(f"{c.id}-rotation") for c in campaigns}
        self.sticky: dict[int, tuple[str, int]] = {}  # account index -> (proxy, until ms)
        self.new_model, self.pivot_ms = new_model, pivot * 1000
        self.paraphrase, self.cover = paraphrase, cover

    def line(self, ms: int, acct: SimAccount) -> str:
        """The JSON line of one request."""
        if acct.campaign is not None:
            address, ci, body = self._campaign(ms, acct)
        else:
            address = acct.address(ms / 1000, self.benign)
            ci, body = self._benign(ms, acct)
        client = acct.clients[ci]
        return (
            f'{{"ts":{_ms_text(ms)},"source_ip":"{address}","method":"POST",'
            f'"path":"{client.path}","headers":{acct.headers[ci]},'
            f'"body":{encode_basestring(client.body(body))}}}\n'
        )

    # --- benign ------------------------------------------------------------------------

    def _model(self, rng: random.Random, acct: SimAccount, ms: int) -> str:
        if rng.random() >= acct.p_frontier:
            return SMALL
        if ms >= acct.adopt_at * 1000 and ms >= self.pivot_ms and rng.random() < 0.75:
            return self.new_model
        return FRONTIER

    def _benign(self, ms: int, acct: SimAccount) -> tuple[int, dict[str, Any]]:
        rng = self.benign
        ci = acct.client_index(rng)
        client = acct.clients[ci]
        if acct.group == "ci":
            job = pick(rng, acct.ci_jobs)
            text = ci_prompt(rng, job[1], acct.repo)
            model = (
                SMALL
                if acct.p_frontier == 0
                else (
                    self.new_model if ms >= max(acct.adopt_at * 1000, self.pivot_ms) else FRONTIER
                )
            )
            if client.api == "anthropic":
                return ci, anthropic_body(model, 4096, text)
            return ci, openai_body(model, text, max_completion=4096)
        model = self._model(rng, acct, ms)
        if acct.group == "researcher":
            return ci, self._researcher(rng, client, model)
        assert acct.style is not None
        history = None
        if rng.random() < 0.12:
            history = (individual_prompt(rng, acct.style), pick(rng, _REPLIES))
        return ci, self._ordinary(
            rng,
            client,
            model,
            individual_prompt(rng, acct.style),
            thinking=acct.thinking,
            system=acct.system,
            history=history,
        )

    def _ordinary(
        self,
        rng: random.Random,
        client: Client,
        model: str,
        text: str,
        *,
        thinking: float = 0.0,
        system: str | None = None,
        history: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        think = rng.random() < thinking
        if client.api == "anthropic":
            budget = pick(rng, (1024, 2048, 4096)) if think else 0
            cap = (
                budget + pick(rng, (1024, 2048, 4096))
                if think
                else pick(rng, (1024, 1024, 2048, 4096, 8192))
            )
            return anthropic_body(model, cap, text, system=system, thinking=budget, history=history)
        effort = pick(rng, ("low", "medium")) if think else None
        limit = pick(rng, (0, 0, 1000, 2000, 4000))
        return openai_body(
            model, text, system=system, effort=effort, max_completion=limit, history=history
        )

    def _researcher(self, rng: random.Random, client: Client, model: str) -> dict[str, Any]:
        text, evaluation = researcher_prompt(rng)
        if client.api == "anthropic":
            budget = pick(rng, (8000, 16000, 24000, 32000)) if rng.random() < 0.8 else 0
            return anthropic_body(model, budget + 8192 if budget else 4096, text, thinking=budget)
        n = pick(rng, (3, 5, 8)) if evaluation and rng.random() < 0.4 else 1
        return openai_body(
            model,
            text,
            effort=pick(rng, ("high", "high", "medium")),
            n=n,
            top_logprobs=5 if rng.random() < 0.25 else 0,
            max_completion=4000 if n > 1 else 16000,
        )

    # --- campaigns ---------------------------------------------------------------------

    def _proxy(self, ms: int, acct: SimAccount, c: Campaign) -> str:
        held = self.sticky.get(acct.index)
        if held is not None and ms < held[1]:
            return held[0]
        rng = self.proxy_rng[c.index]
        pool = c.free_pool if acct.tier == "free" and rng.random() < 0.95 else c.pool
        address = pick(rng, pool)
        self.sticky[acct.index] = (address, ms + int(c.rotation * rng.uniform(0.5, 1.5) * 1000))
        return address

    def _campaign(self, ms: int, acct: SimAccount) -> tuple[str, int, dict[str, Any]]:
        c = self.campaigns[acct.campaign or 0]
        rng = self.text_rng[c.index]
        address = self._proxy(ms, acct, c)
        client = acct.clients[0]
        since = ms - self.pivot_ms
        if since >= 0 and rng.random() < 0.9 * min(1.0, since / (PIVOT_RAMP * 1000)):
            model = self.new_model
        else:
            model = FRONTIER if rng.random() < 0.85 else SMALL
        if rng.random() < self.cover:
            assert acct.style is not None
            return (
                address,
                0,
                self._ordinary(rng, client, model, individual_prompt(rng, acct.style)),
            )
        _, system, text, _ = c.text.prompt(rng, self.paraphrase)
        if client.api == "anthropic":
            budget = pick(rng, (16000, 20000, 24000, 32000)) if rng.random() < 0.95 else 0
            cap = budget + pick(rng, (4096, 8192)) if budget else 8192
            return address, 0, anthropic_body(model, cap, text, system=system, thinking=budget)
        n = pick(rng, (2, 3, 4)) if rng.random() < 0.15 else 1
        body = openai_body(
            model,
            text,
            system=system,
            effort="high" if rng.random() < 0.9 else "medium",
            n=n,
            top_logprobs=pick(rng, (5, 10, 20)) if rng.random() < 0.2 else 0,
            max_completion=8000 if n > 1 else pick(rng, (16000, 24000, 32000)),
        )
        return address, 0, body
