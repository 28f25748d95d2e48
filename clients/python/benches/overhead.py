"""Decision latency through the Python client vs raw HTTP, in one run against one server.

    python clients/python/benches/overhead.py [decisions-per-side]

Starts `truststack serve` (the test suite's set-up: $TRUSTSTACK_BIN or target/debug/truststack)
and alternates, call by call, a raw `httpx.Client.post` of the same request body on one
keep-alive connection and `truststack.Client.decide` on another; prints each side's p50/p90 and
the client's overhead (the difference of the p50s) and the per-call cost of the client's own
work (building the request, parsing the decision), measured without the network.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent / "src"), str(HERE.parent / "tests")]

import httpx  # noqa: E402

from conftest import start, stop  # noqa: E402
from truststack import Client, Decision  # noqa: E402
from truststack import _protocol as wire  # noqa: E402


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * p))]


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    server = start(Path(tempfile.mkdtemp()))
    try:
        token = server.agent("bench")
        args = {"page": "runbook"}
        client = Client(server.url, token)
        raw = httpx.Client(timeout=60)
        headers = {"authorization": f"Bearer {token}"}
        url = f"{server.url}/v1/decide"
        for _ in range(100):  # warm both connections
            raw.post(url, json={"tool": "read_docs", "args": args}, headers=headers).json()
            client.decide("read_docs", args)
        t_raw: list[float] = []
        t_client: list[float] = []
        for _ in range(n):
            t0 = time.perf_counter()
            raw.post(url, json={"tool": "read_docs", "args": args}, headers=headers).json()
            t1 = time.perf_counter()
            client.decide("read_docs", args)
            t2 = time.perf_counter()
            t_raw.append(t1 - t0)
            t_client.append(t2 - t1)
        # The client's own work per call, no network: build the request, read a decision.
        body = raw.post(url, json={"tool": "read_docs", "args": args}, headers=headers).json()
        m = 20000
        t0 = time.perf_counter()
        for _ in range(m):
            wire.decide("read_docs", args, None, None, None)
            Decision.from_json(body)
        own = (time.perf_counter() - t0) / m
        us = 1e6
        print(f"decisions per side: {n} (alternating, one keep-alive connection each)")
        print(f"raw httpx:        p50 {pct(t_raw, .5) * us:8.1f} µs   p90 {pct(t_raw, .9) * us:8.1f} µs")
        print(f"truststack.Client p50 {pct(t_client, .5) * us:8.1f} µs   p90 {pct(t_client, .9) * us:8.1f} µs")
        print(f"overhead (p50 difference): {(pct(t_client, .5) - pct(t_raw, .5)) * us:.1f} µs;"
              f" median of paired differences: {statistics.median(c - r for c, r in zip(t_client, t_raw)) * us:.1f} µs")
        print(f"client's own work per call (no network): {own * us:.1f} µs")
    finally:
        stop(server)


if __name__ == "__main__":
    main()
