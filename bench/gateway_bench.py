"""Item 5: the gateway's upload path alone (authentication, upload checks, images into
Redis, the transaction document into MongoDB, the first stage's jobs published).

No worker runs: jobs pile up in the (durable, declared) stage queues and are purged after
each level, and the images the gateway stored are deleted. Clients are httpx AsyncClient
tasks in this process, `concurrency` requests in flight at a time, each posting the
astronaut pair (`wait=0`: the 202 answer, not the validation). The gateway is one uvicorn
process with production settings, except the per-client rate limit, raised so that it
never answers 429 here.

    python -m bench.gateway_bench [--reps 3] [--concurrency 1 --concurrency 8 ...]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import httpx
import psutil
import redis

from bench.harness import BenchEnv, BenchError, bench_env, cpu_seconds
from bench.pairs import bench_pairs
from bench.stats import format_table, latency_summary, machine, spread, write_json
from shared.blobstore import image_key
from shared.messaging import make_celery, stage_queue
from shared.pipeline import STAGES
from tools.stack import create_client

#: Requests per level: enough for a p99, bounded so that a level lasts seconds.
REQUESTS = {1: 60, 4: 120, 16: 160}


def declare_stage_queues(env: BenchEnv) -> None:
    """Declared as the workers would, so the gateway's jobs are kept (then purged)."""
    app = make_celery(env.settings, name="faceval-bench-declare")
    try:
        with app.connection_for_write() as conn:
            for stage in STAGES:
                stage_queue(stage, env.prefix).bind(conn.default_channel).declare()
    finally:
        app.close()


def wait_ready(url: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise BenchError(f"the gateway at {url} was not ready within {seconds:.0f} s")


async def level(url: str, key: str, concurrency: int, requests: int) -> dict[str, Any]:
    pair = bench_pairs()["astronaut"]
    files = {"near": ("near.jpg", pair.near, "image/jpeg"),
             "far": ("far.jpg", pair.far, "image/jpeg")}  # fmt: skip
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    accepted: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=30,
                                 limits=limits) as http:  # fmt: skip
        counter = iter(range(requests))

        async def client() -> None:
            for index in counter:
                started = time.perf_counter()
                response = await http.post("/v1/validations", files=files,
                                           data={"user_id": f"bench-{index % 50}"})  # fmt: skip
                latencies.append((time.perf_counter() - started) * 1e3)
                statuses[response.status_code] += 1
                if response.status_code == 202:
                    accepted.append(response.json()["transaction_id"])

        began = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - began
    return {
        "concurrency": concurrency,
        "requests": requests,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "requests_per_s": round(requests / elapsed, 3),
        "accepted_per_s": round(len(accepted) / elapsed, 3),
        "latency_ms": latency_summary(latencies),
        "accepted_ids": accepted,
    }


def run(env: BenchEnv, reps: int = 3, concurrency: Sequence[int] = (1, 4, 16)) -> dict[str, Any]:
    declare_stage_queues(env)
    url = env.start_gateway()
    store = redis.Redis.from_url(env.settings.redis_url)
    runs: dict[int, list[dict[str, Any]]] = {c: [] for c in concurrency}
    try:
        wait_ready(url)
        _, key = asyncio.run(create_client(env.settings, f"bench-{uuid.uuid4().hex[:6]}"))
        gateway = env.stack.processes["gateway"].pid
        me = psutil.Process().pid
        asyncio.run(level(url, key, 2, 10))  # warm-up: connections, first-use paths
        env.purge_queues()
        for rep in range(reps):
            for c in concurrency:
                count = REQUESTS.get(c, 10 * c)
                before = cpu_seconds([gateway]), cpu_seconds([me])
                result = asyncio.run(level(url, key, c, count))
                result["cpu_ms_per_request_gateway"] = round(
                    (cpu_seconds([gateway]) - before[0]) * 1e3 / count, 3
                )
                result["cpu_ms_per_request_clients"] = round(
                    (cpu_seconds([me]) - before[1]) * 1e3 / count, 3)  # fmt: skip
                result["jobs_purged"] = env.purge_queues()
                ids = result.pop("accepted_ids")
                keys = [image_key(t, s) for t in ids for s in ("near", "far")]
                for start in range(0, len(keys), 500):
                    store.delete(*keys[start : start + 500])
                runs[c].append(result)
                print(f"    rep {rep + 1}/{reps} concurrency {c:>3}: "
                      f"{result['requests_per_s']:7.1f} req/s, p50 "
                      f"{result['latency_ms']['p50']:.1f} ms, {result['statuses']}",
                      flush=True)  # fmt: skip
    finally:
        store.close()
        env.stop_gateway()
        env.purge_queues()
    levels = {}
    for c, entries in runs.items():
        levels[str(c)] = {
            "requests_per_s": spread(e["requests_per_s"] for e in entries),
            "accepted_per_s": spread(e["accepted_per_s"] for e in entries),
            "latency_p50_ms": spread(e["latency_ms"]["p50"] for e in entries),
            "latency_p95_ms": spread(e["latency_ms"]["p95"] for e in entries),
            "latency_p99_ms": spread(e["latency_ms"]["p99"] for e in entries),
            "cpu_ms_per_request_gateway": spread(
                e["cpu_ms_per_request_gateway"] for e in entries),
            "runs": entries,
        }  # fmt: skip
    pair = bench_pairs()["astronaut"]
    return {
        "benchmark": "gateway",
        "machine": machine(),
        "config": {"reps": reps, "concurrency": list(concurrency), "requests": REQUESTS,
                   "upload_bytes": len(pair.near) + len(pair.far), "gateway_processes": 1,
                   "workers": "none running (jobs purged after each level)"},
        "levels": levels,
    }  # fmt: skip


def print_report(report: Mapping[str, Any]) -> None:
    rows = []
    for c, v in report["levels"].items():
        rows.append([c, v["requests_per_s"]["median"],
                     f"{v['requests_per_s']['min']:.1f}-{v['requests_per_s']['max']:.1f}",
                     v["latency_p50_ms"]["median"], v["latency_p95_ms"]["median"],
                     v["latency_p99_ms"]["median"],
                     v["cpu_ms_per_request_gateway"]["median"]])  # fmt: skip
    print(format_table(["clients", "req/s", "req/s min-max", "p50 ms", "p95 ms", "p99 ms",
                        "gateway cpu ms/req"], rows))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--concurrency", type=int, action="append")
    args = parser.parse_args()
    levels = args.concurrency or [1, 4, 16]
    if not (1 <= args.reps <= 20 and all(1 <= c <= 64 for c in levels)):
        parser.error("bounded: reps 1-20, concurrency 1-64")
    with bench_env("gateway") as env:
        report = run(env, args.reps, levels)
    print_report(report)
    print(f"\nwrote {write_json('gateway.json', report)}")


if __name__ == "__main__":
    main()
