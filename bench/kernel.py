"""Kernel overhead: a no-op syscall called directly, through Kernel.invoke, and over REST.

Run from the project root:

    .venv/bin/python bench/kernel.py [--calls 5000] [--seconds 5] [--workers 4]

Prints a table, then one JSON line with inproc_p50_ms, inproc_p95_ms, rest_p50_ms,
rest_calls_per_s, overhead_ratio (in-process p50 / direct handler p50). The REST server
is the real `underlay up` in its own process (SQLite, embedded defaults, own home);
clients use keep-alive connections (stdlib http.client, one per worker thread).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from underlay.config import Config  # noqa: E402
from underlay.kernel.context import CallContext  # noqa: E402
from underlay.kernel.kernel import Kernel  # noqa: E402
from underlay.types import Empty  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def in_process(calls: int) -> tuple[list[float], list[float], str, Path]:
    home = Path(tempfile.mkdtemp(prefix="ul-bench-"))
    kernel = await Kernel.open(Config.load(home=home))
    admin = kernel.admin_token()
    agent = await kernel.invoke(
        "agents.create", {"name": "bench", "capabilities": ["system.*"]}, token=admin
    )
    issued = await kernel.invoke("tokens.create", {"subject": agent.id}, token=admin)
    token = issued.token.get_secret_value()
    noop = kernel.table.get("system.noop")
    principal = await kernel.authn.authenticate(token)
    ctx = CallContext(
        kernel=kernel, principal=principal, syscall=noop, idempotency_key=None, trace_id=""
    )
    direct, chained = [], []
    for _ in range(500):  # warm-up
        await kernel.invoke("system.noop", {}, token=token)
    for _ in range(calls):
        t0 = time.perf_counter()
        await noop.handler(ctx, Empty())
        direct.append(time.perf_counter() - t0)
    for _ in range(calls):
        t0 = time.perf_counter()
        await kernel.invoke("system.noop", {}, token=token)
        chained.append(time.perf_counter() - t0)
    await kernel.close()
    return direct, chained, token, home


def start_server(home: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "UNDERLAY_HOME": str(home)}
    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/underlay"), "up", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    deadline = time.time() + 30
    assert proc.stdout is not None
    while time.time() < deadline:
        line = proc.stdout.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+)", line)
        if match:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain
            return proc, match.group(1)
        if proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit("underlay up did not print its URL")


def rest_call(conn: http.client.HTTPConnection, token: str) -> None:
    conn.request("POST", "/v1/system/noop", body=b"{}", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
    })
    resp = conn.getresponse()
    body = resp.read()
    if resp.status != 200:
        raise SystemExit(f"REST call failed: {resp.status} {body[:200]!r}")


def rest_latency(host: str, port: int, token: str, calls: int) -> list[float]:
    conn = http.client.HTTPConnection(host, port)
    for _ in range(300):
        rest_call(conn, token)
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        rest_call(conn, token)
        out.append(time.perf_counter() - t0)
    conn.close()
    return out


def rest_throughput(host: str, port: int, token: str, seconds: float, workers: int) -> float:
    counts = [0] * workers
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection(host, port)
        while time.perf_counter() < stop:
            rest_call(conn, token)
            counts[i] += 1
        conn.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()

    direct, chained, token, home = asyncio.run(in_process(args.calls))
    proc, url = start_server(home)
    try:
        host, port = url.removeprefix("http://").split(":")
        rest = rest_latency(host, int(port), token, args.calls)
        rate = rest_throughput(host, int(port), token, args.seconds, args.workers)
    finally:
        proc.terminate()
        proc.wait(timeout=10)

    ms = lambda xs, q: round(pct(xs, q) * 1000, 4)  # noqa: E731
    direct_p50 = statistics.median(direct)
    rows = [
        ("handler called directly", ms(direct, 0.5), ms(direct, 0.95)),
        ("Kernel.invoke (in-process)", ms(chained, 0.5), ms(chained, 0.95)),
        ("REST, keep-alive", ms(rest, 0.5), ms(rest, 0.95)),
    ]
    print(f"{'path':<30}{'p50 ms':>10}{'p95 ms':>10}")
    for name, p50, p95 in rows:
        print(f"{name:<30}{p50:>10}{p95:>10}")
    print(f"REST throughput with {args.workers} keep-alive clients: {rate:,.0f} calls/s")
    print(json.dumps({
        "inproc_p50_ms": ms(chained, 0.5),
        "inproc_p95_ms": ms(chained, 0.95),
        "rest_p50_ms": ms(rest, 0.5),
        "rest_calls_per_s": round(rate, 1),
        "overhead_ratio": round(statistics.median(chained) / direct_p50, 1),
    }))


if __name__ == "__main__":
    main()
