"""Throughput and memory of a muse-eval run against a zero-latency local server.

Not a test: it takes minutes. It starts the fault server (with no faults) as a
separate process, so that server and client do not share one interpreter lock, and
measures in the same sitting:

1. a bare ``httpx.AsyncClient`` loop: the same chat request muse-eval sends (an
   MMLU question, ``max_tokens`` 8, top-20 logprobs), ``--concurrency`` workers,
   one pooled client with as many connections, each reply parsed as JSON;
2. the same loop over eight pools of eight connections, as muse-eval's
   OpenAI-compatible provider sends them (httpx's pool scans all its connections
   for every request), and the same loop with aiohttp, to show what the HTTP
   client itself costs;
3. a whole muse-eval run (``python -m muse_eval.cli``, the real orchestrator and
   the DuckDB writer) with N = M = 1 and every condition, sized to about
   ``--units`` units, one request each, at the same concurrency;
4. the bare httpx loop again, so that a machine whose load drifts during the
   run is compared against the mean of both bare measurements.

It prints requests per second of each, the ratio of muse-eval to bare httpx, the
peak resident memory of the muse-eval process, and how long its writer spent
storing and whether workers ever waited for it::

    .venv/bin/python benchmarks/throughput.py                   # ~100,000 units
    .venv/bin/python benchmarks/throughput.py --units 20000     # quicker
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
#: Units per MMLU item with N = M = 1 and all conditions: the sample, the control,
#: 3 expertise levels x (plausible, implausible, and correct for the 3 in 4 items
#: whose modal answer is wrong, since the server always answers B).
UNITS_PER_ITEM = 1 + 1 + 3 * (1 + 1 + 0.75)


def start_server() -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "fault_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    if not url.startswith("http://127.0.0.1:"):
        server.kill()
        raise SystemExit(f"the fault server did not start: {url!r}")
    return server, url


def request_body() -> dict[str, Any]:
    """The chat request muse-eval sends for an MMLU item's stage one."""
    from muse_eval.task import load_task

    task = load_task("mmlu")
    item = next(task.iter_items())
    return {
        "model": "bench",
        "messages": [m.model_dump() for m in task.question_messages(item)],
        "temperature": 1.0,
        "max_tokens": 8,
        "seed": 1,
        "logprobs": True,
        "top_logprobs": 20,
    }


async def bare_httpx(
    url: str, requests: int, concurrency: int, pools: int = 1
) -> float:
    """Requests per second of a bare httpx loop over `pools` clients."""
    body = request_body()
    per_pool = max(1, concurrency // pools)
    limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
    clients = [
        httpx.AsyncClient(base_url=url, limits=limits, timeout=60) for _ in range(pools)
    ]
    left = requests

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            reply = await client.post("/chat/completions", json=body)
            assert reply.status_code == 200 and reply.json()["choices"]

    started = time.perf_counter()
    await asyncio.gather(*(worker(clients[i % pools]) for i in range(concurrency)))
    rate = requests / (time.perf_counter() - started)
    for client in clients:
        await client.aclose()
    return rate


async def bare_aiohttp(url: str, requests: int, concurrency: int) -> float:
    """Requests per second of the same loop with aiohttp."""
    import aiohttp

    body = request_body()
    left = requests
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(f"{url}/chat/completions", json=body) as r:
                    assert r.status == 200 and (await r.json())["choices"]

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - started)


def run_with_peak_rss(url: str, items: int, concurrency: int) -> dict[str, Any]:
    """Run muse-eval in a child process: its rate, units, writer and peak RSS."""
    # wait4 returns the child's own peak RSS as it reaps it (getrusage of all
    # children would mix in the server's), so output goes to files, not pipes.
    with tempfile.TemporaryDirectory() as folder:
        argv = [
            sys.executable, "-m", "muse_eval.cli",
            "--provider", "openai-compatible", "--model", "bench",
            "--base-url", url, "--limit", str(items),
            "--samples", "1", "--pushback-samples", "1",
            "--max-concurrency", str(concurrency),
            "--db", str(Path(folder) / "bench.duckdb"), "-q",
        ]  # fmt: skip
        out_path, err_path = Path(folder) / "out", Path(folder) / "err"
        started = time.perf_counter()
        with out_path.open("w") as out_file, err_path.open("w") as err_file:
            child = subprocess.Popen(argv, cwd=REPO, stdout=out_file, stderr=err_file)
            _, status, usage = os.wait4(child.pid, 0)
            child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - started
        out, err = out_path.read_text(), err_path.read_text()
        db_mb = (Path(folder) / "bench.duckdb").stat().st_size / 2**20
    if child.returncode != 0:
        raise SystemExit(f"muse-eval failed:\n{err[-2000:]}")
    text = " ".join(out.split())
    invocation = re.search(
        r"This invocation: (\d+) units stored .*?, (\d+) requests, .*? in ([\d.]+) s",
        text,
    )
    writer = re.search(
        r"Stored (\d+) units in (\d+) batches, ([\d.]+) s of ([\d.]+) s spent "
        r"storing; workers waited for the writer (\d+) times",
        " ".join(err.split()),
    )
    assert invocation is not None, text[-2000:]
    units, requests, seconds = invocation.groups()
    return {
        "units": int(units),
        "requests": int(requests),
        "seconds": float(seconds),
        "rps": int(requests) / float(seconds),
        "wall": wall,
        "flushes": int(writer.group(2)) if writer else None,
        "storing_s": float(writer.group(3)) if writer else None,
        "writer_waits": int(writer.group(5)) if writer else None,
        "peak_rss_mb": usage.ru_maxrss / 1024,
        "db_mb": db_mb,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--bare-requests", type=int, default=20_000)
    args = parser.parse_args()
    items = min(14_042, round(args.units / UNITS_PER_ITEM))

    server, url = start_server()
    try:
        print(f"server {url} (separate process); concurrency {args.concurrency}")
        first = asyncio.run(bare_httpx(url, args.bare_requests, args.concurrency))
        print(f"bare httpx loop:    {first:8.0f} requests/s")
        pooled = asyncio.run(
            bare_httpx(url, args.bare_requests, args.concurrency, pools=8)
        )
        print(f"bare httpx, 8 pools:{pooled:8.0f} requests/s")
        aio = asyncio.run(bare_aiohttp(url, args.bare_requests, args.concurrency))
        print(f"bare aiohttp loop:  {aio:8.0f} requests/s")
        print(f"muse-eval: {items} items, about {args.units} units ...", flush=True)
        run = run_with_peak_rss(url, items, args.concurrency)
        print(
            f"muse-eval run:      {run['rps']:8.0f} requests/s "
            f"({run['units']} units, {run['requests']} requests in "
            f"{run['seconds']:.1f} s; {run['wall']:.1f} s with start-up and summary)"
        )
        second = asyncio.run(bare_httpx(url, args.bare_requests, args.concurrency))
        print(f"bare httpx again:   {second:8.0f} requests/s")
        pooled_again = asyncio.run(
            bare_httpx(url, args.bare_requests, args.concurrency, pools=8)
        )
        print(f"8 pools again:      {pooled_again:8.0f} requests/s")
    finally:
        server.terminate()
        server.wait()

    bare = (first + second) / 2
    bare_pooled = (pooled + pooled_again) / 2
    print()
    print(f"muse-eval / bare httpx:   {run['rps'] / bare:6.1%}  (target >= 90 %)")
    print(f"muse-eval / httpx 8 pools:{run['rps'] / bare_pooled:6.1%}")
    print(f"muse-eval / bare aiohttp: {run['rps'] / aio:6.1%}")
    print(
        f"peak RSS of muse-eval:    {run['peak_rss_mb']:6.0f} MB at {run['units']} "
        "units (target < 300 MB)"
    )
    print(
        f"writer: {run['flushes']} batches, {run['storing_s']} s storing in a "
        f"worker thread over a {run['seconds']:.1f} s run; workers waited for it "
        f"{run['writer_waits']} times; database {run['db_mb']:.0f} MB"
    )
    figures = {
        "bare_httpx_rps": [first, second],
        "bare_httpx_8_pools_rps": [pooled, pooled_again],
        "aiohttp_rps": aio,
        **run,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
