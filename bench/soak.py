"""Soak: hold a steady submission rate for a bounded time and count what got lost.

Loopback only, bounded in count and time, stops by itself. Starts its own stack (fresh
MongoDB-wire server, unique queue prefix) unless --url and --key point at a running one.

    python bench/soak.py --rate 2 --seconds 180

Prints a table and writes bench/results/soak.json: submitted, accepted by the gateway,
finished, lost (accepted but never final), stuck (still pending after the drain window),
summary reasons, end-to-end latency percentiles, and 429/503 answers (back-pressure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.imaging import encode_jpeg
from tools.samples import SAMPLES

RESULTS = Path(__file__).parent / "results"


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def soak(url: str, key: str, rate: float, seconds: float, drain: float) -> dict[str, Any]:
    pairs = [(s.name, *(encode_jpeg(i) for i in s.make())) for s in SAMPLES]
    accepted: dict[str, float] = {}
    refused: Counter[int] = Counter()
    submitted = 0
    async with httpx.AsyncClient(base_url=url, headers={"X-API-Key": key}, timeout=30) as http:

        async def one(index: int) -> None:
            nonlocal submitted
            _, near, far = pairs[index % len(pairs)]
            submitted += 1
            sent = time.monotonic()
            response = await http.post(
                "/v1/validations",
                files={"near": ("n.jpg", near), "far": ("f.jpg", far)},
                data={"user_id": f"soak-{index % 50}"},
            )
            if response.status_code == 202:
                accepted[response.json()["transaction_id"]] = sent
            else:
                refused[response.status_code] += 1

        started = time.monotonic()
        tasks = []
        index = 0
        while time.monotonic() - started < seconds:
            tasks.append(asyncio.create_task(one(index)))
            index += 1
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)

        finals: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + drain
        while len(finals) < len(accepted) and time.monotonic() < deadline:
            for tid in [t for t in accepted if t not in finals]:
                body = (await http.get(f"/v1/validations/{tid}")).json()
                if body.get("status") == "completed":
                    finals[tid] = body
            await asyncio.sleep(0.5)
        pending = [t for t in accepted if t not in finals]
        lost = [t for t in pending if (await http.get(f"/v1/validations/{t}")).status_code == 404]

    latencies = [b["total_time_ms"] for b in finals.values() if b.get("total_time_ms")]
    return {
        "machine": f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
        "rate_per_s": rate,
        "seconds": seconds,
        "submitted": submitted,
        "accepted_by_gateway": len(accepted),
        "refused": dict(refused),
        "finished": len(finals),
        "lost": len(lost),
        "stuck": len(pending) - len(lost),
        "reasons": dict(Counter(b["summary_reason"] for b in finals.values())),
        "latency_ms": {
            "p50": percentile(latencies, 50),
            "p95": percentile(latencies, 95),
            "p99": percentile(latencies, 99),
            "mean": statistics.fmean(latencies) if latencies else None,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=2.0, help="submissions per second")
    parser.add_argument("--seconds", type=float, default=180.0, help="how long to submit")
    parser.add_argument("--drain", type=float, default=120.0, help="wait for the last ones")
    parser.add_argument("--url")
    parser.add_argument("--key")
    args = parser.parse_args()
    if args.seconds > 1800 or args.rate > 50:
        parser.error("bounded by design: at most 30 minutes and 50 submissions a second")

    stack = None
    url, key = args.url, args.key
    if not url:
        from shared.settings import get_settings
        from tools.stack import create_client, free_port, start_stack

        state = Path(tempfile.mkdtemp(prefix="faceval-soak-"))
        os.environ.update({
            "FACEVAL_MONGO_URL": f"mongodb://127.0.0.1:{free_port()}/",
            "FACEVAL_QUEUE_PREFIX": f"faceval-soak-{uuid.uuid4().hex[:6]}",
            "FACEVAL_STATE_DIR": str(state),
            "FACEVAL_RATE_LIMIT_PER_MINUTE": "100000",
        })  # fmt: skip
        get_settings.cache_clear()
        stack = start_stack(free_port())
        url = stack.url
        _, key = asyncio.run(create_client(get_settings(), f"soak-{uuid.uuid4().hex[:6]}"))
    try:
        report = asyncio.run(soak(url, key, args.rate, args.seconds, args.drain))
    finally:
        if stack is not None:
            stack.stop()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "soak.json").write_text(json.dumps(report, indent=2))
    for name, value in report.items():
        print(f"{name:>20}: {value}")
    sys.exit(1 if report["lost"] or report["stuck"] else 0)


if __name__ == "__main__":
    main()
