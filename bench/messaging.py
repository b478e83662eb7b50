"""Item 1: messaging overhead. FaceVal's pipeline with no-op analyzers against a raw pika chain.

Three variants, interleaved within each repetition so background load hits them alike:
- raw_fetch: bench.raw_chain, each hop fetching its image from Redis (the reference the
  issue quotes: p50 5.04 ms with 300 KB images on this machine kind);
- raw_fetch_decode: the same, each hop also decoding the JPEG, which FaceVal's runtime does
  before any model: the like-for-like reference for the headline ratio;
- faceval_noop: the production workers (bench.noop_worker: Celery, the stage runtime,
  MongoDB records and decisions) with a model that does nothing.
Each is measured closed loop (one transaction in flight: p50/p95/p99 from first-stage
publish to the end message) and as a burst (all published at once: steady-state and
makespan throughput). Message bodies of the raw chain are padded to a FaceVal job
message's size (body plus headers), measured on the broker.

    python -m bench.messaging [--reps 3] [--latency-count 100] [--burst-count 200]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

import pika

from bench.harness import (
    BenchEnv,
    Driver,
    RunTimes,
    Target,
    bench_env,
    burst,
    closed_loop,
    cpu_seconds,
    rss_mib,
)
from bench.pairs import BenchPair, bench_pairs
from bench.raw_chain import HOPS, RawChain, hop_queue
from bench.stats import (
    format_table,
    latency_summary,
    machine,
    makespan_throughput,
    ratio,
    spread,
    steady_throughput,
    write_json,
)
from shared.messaging import make_celery, publish_job, stage_queue
from shared.pipeline import STAGES, queue_name
from shared.queues import pika_url
from shared.schema import StageJob

PAIR = "astronaut"
VARIANTS = ("raw_fetch", "raw_fetch_decode", "faceval_noop")


def faceval_message_bytes(env: BenchEnv) -> dict[str, int]:
    """Publish one real job to the first stage's queue (no consumer yet) and weigh it."""
    app = make_celery(env.settings, name="faceval-bench-probe")
    with app.connection_for_write() as conn:
        for stage in STAGES:
            stage_queue(stage, env.prefix).bind(conn.default_channel).declare()
    job = StageJob(transaction_id="0" * 32, image="near")
    publish_job(app, STAGES[0], job)
    params = pika.URLParameters(pika_url(env.settings.broker_url))
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        for _ in range(50):
            method, props, body = channel.basic_get(queue_name(STAGES[0], env.prefix))
            if method is not None:
                channel.basic_ack(method.delivery_tag)
                break
            time.sleep(0.1)
        else:
            raise RuntimeError("the probe job never reached its queue")
        headers = len(json.dumps(props.headers or {}, default=str).encode())
        return {"body": len(body), "headers": headers, "total": len(body) + headers}
    finally:
        connection.close()
        app.close()


def start_raw_hops(
    env: BenchEnv, prefix: str, flags: Sequence[str] = (), per_hop: int = 1,
    extra_env: Mapping[str, str] | None = None, seconds: float = 60,
) -> tuple[list[str], list[int]]:  # fmt: skip
    """`per_hop` consumer processes per hop (bench.raw_chain with `flags`); (process names,
    pids) once all consume."""
    names, pids = [], []
    for hop in range(HOPS):
        for index in range(per_hop):
            name = f"{prefix.rsplit('-', 1)[-1]}-hop{hop}" + (f"-{index}" if per_hop > 1 else "")
            argv = [sys.executable, "-m", "bench.raw_chain", "hop", str(hop), "--prefix", prefix]
            env.stack._spawn(name, [*argv, *flags], dict(extra_env or {}))
            names.append(name)
            pids.append(env.stack.processes[name].pid)
    params = pika.URLParameters(pika_url(env.settings.broker_url))
    deadline = time.monotonic() + seconds
    connection = pika.BlockingConnection(params)
    try:
        while time.monotonic() < deadline:
            counts = []
            for hop in range(HOPS):
                channel = connection.channel()
                try:
                    ok = channel.queue_declare(hop_queue(prefix, hop), passive=True)
                    counts.append(int(ok.method.consumer_count))
                    channel.close()
                except pika.exceptions.ChannelClosedByBroker:
                    counts.append(0)
            if all(c >= per_hop for c in counts):
                return names, pids
            if any(env.stack.processes[n].poll() is not None for n in names):
                raise RuntimeError(f"a raw chain hop for {prefix} exited before consuming")
            time.sleep(0.2)
    finally:
        connection.close()
    raise RuntimeError(f"raw chain hops for {prefix} did not start consuming")


def summarise_run(times: RunTimes, cpu_s: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Latency summary, throughput and, given CPU seconds per process group, CPU ms per tx."""
    out: dict[str, Any] = {"latency_ms": latency_summary(times.latencies_ms)}
    out["throughput_steady"] = steady_throughput(times.completions)
    out["throughput_makespan"] = makespan_throughput(times.started, times.completions)
    if cpu_s is not None:
        per_tx = {k: round(v * 1e3 / len(times.ids), 3) for k, v in cpu_s.items()}
        out["cpu_ms_per_tx"] = {**per_tx, "total": round(sum(per_tx.values()), 3)}
    return out


def hop_breakdown(docs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Median per stage of the runtime's own timings: queue, work (decode included), decode."""
    fields: dict[str, list[float]] = defaultdict(list)
    totals = []
    for doc in docs:
        if doc.get("total_time_ms") is not None:
            totals.append(float(doc["total_time_ms"]))
        for stage, sides in (doc.get("stages") or {}).items():
            for side in ("near", "far"):
                record = sides.get(side) or {}
                for key in ("queue_time_ms", "time_ms", "decode_ms"):
                    if record.get(key) is not None:
                        fields[f"{stage}.{key}"].append(float(record[key]))
    return {
        "total_time_ms": latency_summary(totals),
        "per_stage_median_ms": {k: spread(v)["median"] for k, v in sorted(fields.items())},
    }


def run(
    env: BenchEnv, reps: int = 3, latency_count: int = 100, burst_count: int = 200
) -> dict[str, Any]:
    pair: BenchPair = bench_pairs()[PAIR]
    size = faceval_message_bytes(env)
    env.purge_queues()
    targets: dict[str, Target] = {}
    chains: list[RawChain] = []
    hop_names: list[str] = []
    cpu_pids: dict[str, dict[str, list[int]]] = {}
    runs: dict[str, list[dict[str, Any]]] = {v: [] for v in VARIANTS}
    noop_rss: dict[str, float | None] = {}
    faceval_docs: list[Mapping[str, Any]] = []
    driver = Driver(env.settings)
    try:
        for variant, decode in (("raw_fetch", False), ("raw_fetch_decode", True)):
            prefix = f"{env.prefix}-{'dec' if decode else 'raw'}"
            names, pids = start_raw_hops(env, prefix, ["--decode"] if decode else [])
            hop_names += names
            cpu_pids[variant] = {"hops": pids}
            chains.append(RawChain(env.settings.broker_url, env.settings.redis_url, prefix,
                                   size["total"]))  # fmt: skip
            targets[variant] = chains[-1]
        workers = env.start_workers("noop")
        noop_rss = rss_mib(workers)  # the runtime's own footprint: Celery, clients, no models
        mongo = env.mongo_pid()
        cpu_pids["faceval_noop"] = {"workers": list(workers.values()),
                                    "mongo": [mongo] if mongo else []}  # fmt: skip
        targets["faceval_noop"] = driver
        for variant in VARIANTS:  # warm-up: connections, caches, first-use imports
            closed_loop(targets[variant], [pair] * 5)
        for rep in range(reps):
            # A fresh MongoDB-wire server per repetition: its cost per write grows with the
            # writes it has seen (bench.mongo_ops), and this section writes the most.
            env.restart_mongo()
            mongo = env.mongo_pid()
            cpu_pids["faceval_noop"]["mongo"] = [mongo] if mongo else []
            closed_loop(driver, [pair] * 3)  # clients reconnect
            for variant in VARIANTS:
                loop = closed_loop(targets[variant], [pair] * latency_count)
                before = {k: cpu_seconds(v) for k, v in cpu_pids[variant].items()}
                wave = burst(targets[variant], [pair] * burst_count)
                used = {k: cpu_seconds(v) - before[k] for k, v in cpu_pids[variant].items()}
                entry = {"rep": rep, "closed_loop": summarise_run(loop),
                         "burst": summarise_run(wave, used)}  # fmt: skip
                if variant == "faceval_noop":
                    docs = driver.results([*loop.ids, *wave.ids])
                    reasons = {d.get("summary_reason") for d in docs.values()}
                    if reasons != {"accepted"}:
                        raise RuntimeError(f"no-op pipeline answered {reasons}, not accepted")
                    faceval_docs += [docs[t] for t in loop.ids]
                runs[variant].append(entry)
                print(f"  rep {rep + 1}/{reps} {variant:<17} closed-loop p50 "
                      f"{entry['closed_loop']['latency_ms']['p50']:.2f} ms, burst "
                      f"{entry['burst']['throughput_steady'] or 0:.0f}/s", flush=True)  # fmt: skip
    finally:
        driver.close()
        env.stop_workers()
        for name in hop_names:
            env.stack.stop_process(name)
        for chain in chains:
            try:
                with contextlib.suppress(pika.exceptions.AMQPError):
                    chain.delete_queues()
            finally:
                chain.close()
    report = build_report(runs, size, pair, reps, latency_count, burst_count, faceval_docs)
    report["noop_worker_rss_mib"] = noop_rss
    return report


def build_report(
    runs: Mapping[str, list[dict[str, Any]]], size: Mapping[str, int], pair: BenchPair,
    reps: int, latency_count: int, burst_count: int, docs: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    variants: dict[str, Any] = {}
    for variant, entries in runs.items():
        variants[variant] = {
            "closed_loop_ms": {
                q: spread(e["closed_loop"]["latency_ms"][q] for e in entries)
                for q in ("p50", "p95", "p99", "mean")
            },
            "burst_throughput_steady": spread(e["burst"]["throughput_steady"] for e in entries),
            "burst_throughput_makespan": spread(e["burst"]["throughput_makespan"] for e in entries),
            "burst_latency_p50_ms": spread(e["burst"]["latency_ms"]["p50"] for e in entries),
            "burst_cpu_ms_per_tx": {
                group: spread(e["burst"]["cpu_ms_per_tx"][group] for e in entries)
                for group in entries[0]["burst"]["cpu_ms_per_tx"]
            },
            "runs": entries,
        }
    fv, ref = variants["faceval_noop"], variants["raw_fetch_decode"]
    fetch = variants["raw_fetch"]

    def per_rep(q: str, against: str) -> dict[str, Any]:
        pairs = zip(runs["faceval_noop"], runs[against], strict=True)
        return spread(
            ratio(a["closed_loop"]["latency_ms"][q], b["closed_loop"]["latency_ms"][q])
            for a, b in pairs
        )

    ratios: dict[str, Any] = {}
    for q in ("p50", "p95", "p99"):
        for name, v in (("raw_fetch_decode", ref), ("raw_fetch", fetch)):
            own, other = fv["closed_loop_ms"][q]["median"], v["closed_loop_ms"][q]["median"]
            ratios[f"{q}_vs_{name}"] = ratio(own, other)
    ratios["p50_vs_raw_fetch_decode_per_rep"] = per_rep("p50", "raw_fetch_decode")
    ratios["throughput_raw_fetch_decode_over_faceval"] = ratio(
        ref["burst_throughput_steady"]["median"], fv["burst_throughput_steady"]["median"]
    )
    ratios["throughput_raw_fetch_over_faceval"] = ratio(
        fetch["burst_throughput_steady"]["median"], fv["burst_throughput_steady"]["median"]
    )
    return {
        "benchmark": "messaging",
        "machine": machine(),
        "config": {
            "reps": reps,
            "latency_count": latency_count,
            "burst_count": burst_count,
            "pair": pair.name,
            "image_bytes": {"near": len(pair.near), "far": len(pair.far)},
            "faceval_message_bytes": dict(size),
            "raw_message_bytes": size["total"],
            "stages": list(STAGES),
            "worker_replicas_per_stage": 1,
        },
        "variants": variants,
        "faceval_noop_breakdown": hop_breakdown(docs),
        "ratios": ratios,
        "messaging_overhead_ratio_p50": ratios["p50_vs_raw_fetch_decode"],
    }


def print_report(report: Mapping[str, Any]) -> None:
    rows = []
    for name, v in report["variants"].items():
        cl = v["closed_loop_ms"]
        rows.append([name, cl["p50"]["median"], cl["p95"]["median"], cl["p99"]["median"],
                     f"{cl['p50']['min']:.2f}-{cl['p50']['max']:.2f}",
                     v["burst_throughput_steady"]["median"],
                     v["burst_throughput_makespan"]["median"],
                     v["burst_cpu_ms_per_tx"]["total"]["median"]])  # fmt: skip
    print(format_table(["variant", "p50 ms", "p95 ms", "p99 ms", "p50 min-max", "burst tx/s",
                        "makespan tx/s", "cpu ms/tx"], rows))  # fmt: skip
    print()
    print(format_table(["ratio (FaceVal no-op over raw)", "value"],
                       [[k, v] for k, v in report["ratios"].items()
                        if not isinstance(v, dict)]))  # fmt: skip
    print("\nFaceVal no-op, median per stage (ms):")
    for key, value in report["faceval_noop_breakdown"]["per_stage_median_ms"].items():
        print(f"  {key:<36} {value}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--latency-count", type=int, default=100)
    parser.add_argument("--burst-count", type=int, default=200)
    parser.add_argument(
        "--mongo-options", default="", help="MongoDB URL options, e.g. retryWrites=false"
    )
    args = parser.parse_args()
    if not (1 <= args.reps <= 20 and 5 <= args.latency_count <= 2000
            and 5 <= args.burst_count <= 2000):  # fmt: skip
        parser.error("bounded: reps 1-20, counts 5-2000")
    with bench_env("messaging", mongo_options=args.mongo_options) as env:
        report = run(env, args.reps, args.latency_count, args.burst_count)
    print_report(report)
    print(f"\nwrote {write_json('messaging.json', report)}")


if __name__ == "__main__":
    main()
