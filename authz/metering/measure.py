"""Measure Redis memory per active account: `python -m authz.metering.measure`.

Charges a typical plan (account: requests per minute, hour and day and a daily
token budget; entity: requests per minute and day and a daily token budget;
volume baselines for both) for `--accounts` accounts, each with its own entity,
at two moments an hour and a minute apart so every field exists. Prints
MEMORY USAGE (SAMPLES 0) of each key of one account, and used_memory growth per
account across all of them (which adds the keyspace and expiry tables).

Without `--redis-url` it starts a throwaway redis-server from PATH. With one,
it writes keys under `dg:rl:{a:measure-*}` and `dg:rl:{e:measure-*}` and
deletes them afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from redis.asyncio import Redis

from authz.metering.plan import build_plan
from authz.metering.redis_store import RedisRateStore
from authz.metering.rules import LimitRules, compile_limits

TYPICAL = compile_limits(
    LimitRules.model_validate(
        {
            "account": {"requests": {"1m": 20, "1h": 300, "1d": 2000}, "tokens": {"1d": 2_000_000}},
            "entity": {"requests": {"1m": 100, "1d": 20000}, "tokens": {"1d": 20_000_000}},
            "anomaly": {"action": "record"},
        }
    )
)
T0 = 1_699_920_000.0


async def measure(url: str, accounts: int) -> None:
    """Charge `accounts` typical accounts and print memory figures."""
    client = Redis.from_url(url)
    store = RedisRateStore(client)
    try:
        before = int((await client.info("memory"))["used_memory"])
        for i in range(accounts):
            plan = build_plan(
                TYPICAL, account=f"measure-{i}", entity=f"measure-{i}", model=None, tokens=1500
            )
            await store.hit(plan, T0 + 10)
            await store.hit(plan, T0 + 3600 + 70)
        after = int((await client.info("memory"))["used_memory"])
        sample = build_plan(
            TYPICAL, account="measure-0", entity="measure-0", model=None, tokens=1500
        )
        keys = [c.key for c in sample.counters] + [v.key for v in sample.volumes]
        total = {"account": 0, "entity": 0}
        print(f"{'key':40} bytes")
        for key in keys:
            size = int(await client.memory_usage(key, samples=0) or 0)
            total["account" if "{a:" in key else "entity"] += size
            print(f"{key:40} {size}")
        print(f"MEMORY USAGE, account keys:            {total['account']} bytes")
        print(f"MEMORY USAGE, entity keys:             {total['entity']} bytes")
        print(f"MEMORY USAGE, account with own entity: {sum(total.values())} bytes")
        print(
            f"used_memory growth per account+entity over {accounts}: "
            f"{(after - before) / accounts:.0f} bytes"
        )
        async for key in client.scan_iter(match="dg:rl:{[ae]:measure-*"):
            await client.delete(key)
    finally:
        await client.aclose()


def _throwaway_server() -> tuple[subprocess.Popen[bytes], str, tempfile.TemporaryDirectory[str]]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found on PATH; pass --redis-url")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tempfile.TemporaryDirectory(prefix="dg-measure-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir.name],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                break
        except OSError:
            time.sleep(0.05)
    return proc, url, workdir


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--redis-url", help="an existing Redis (default: start a throwaway one)")
    parser.add_argument("--accounts", type=int, default=5_000)
    args = parser.parse_args(argv)
    if args.redis_url:
        asyncio.run(measure(args.redis_url, args.accounts))
        return
    proc, url, workdir = _throwaway_server()
    try:
        asyncio.run(measure(url, args.accounts))
    finally:
        proc.kill()
        proc.wait()
        workdir.cleanup()


if __name__ == "__main__":
    main()
