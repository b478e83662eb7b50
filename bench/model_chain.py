"""Light load of the leanest distributed pipeline this machine can run, beside FaceVal's.

`light_load_p50_over_floor` asks a single validation to take at most 1.15x the models'
own critical path. This measures what a pipeline with one process per stage costs at
light load when it does nothing but the hops: bench.raw_chain with `--models`, two pika
consumers per stage (near and far analysed at once, in separate processes: no GIL shared),
each fetching its image from Redis, decoding it, running the stage's production models and
joining the two faces in one Redis round trip; no Celery, no MongoDB, no publisher
confirms, no decision. FaceVal's real workers run the same pairs in the same repetitions,
and both are divided by the floor measured in this run (bench.distribution's in-process
baseline: per stage the longer of near and far, summed).

    python -m bench.model_chain [--reps 3] [--count 20]

Writes bench/results/model_chain.json.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

from bench.distribution import alternating, inprocess_runs, median_floors
from bench.harness import BenchEnv, Driver, Target, bench_env, closed_loop, worker_defaults
from bench.messaging import faceval_message_bytes, start_raw_hops
from bench.pairs import bench_pairs
from bench.raw_chain import RawChain
from bench.stats import format_table, latency_summary, machine, ratio, spread, write_json

#: Consumers per hop: one per image of the pair, as FaceVal's two task threads per stage.
CONSUMERS_PER_HOP = 2


def over_floor(target: Target, names: Sequence[str], floors: Mapping[str, float]) -> dict[str, Any]:
    pairs = bench_pairs()
    loop = closed_loop(target, [pairs[n] for n in names])
    if isinstance(target, Driver):
        # Only accepted pairs ran every stage: a rejection would flatter the latency.
        reasons = {d.get("summary_reason") for d in target.results(loop.ids).values()}
        if reasons != {"accepted"}:
            raise RuntimeError(f"accepted pairs answered {reasons}")
    return {
        "latency_ms": latency_summary(loop.latencies_ms),
        "over_floor": latency_summary(
            [lat / floors[n] for lat, n in zip(loop.latencies_ms, names, strict=True)]
        ),
    }


def run(env: BenchEnv, reps: int, count: int) -> dict[str, Any]:
    floors = median_floors(inprocess_runs(count, 1, reps, worker_defaults()))
    print(f"  floor ms: {floors}", flush=True)
    size = faceval_message_bytes(env)["total"]
    env.purge_queues()
    prefix = f"{env.prefix}-models"
    # Every consumer loads its stage's models before it consumes.
    start_raw_hops(env, prefix, ["--models"], CONSUMERS_PER_HOP, worker_defaults(), seconds=180)
    chain = RawChain(env.settings.broker_url, env.settings.redis_url, prefix, size)
    env.start_workers("real")
    driver = Driver(env.settings)
    targets: dict[str, Target] = {"model_chain": chain, "faceval": driver}
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in targets}
    try:
        env.wait_models_loaded()
        for target in targets.values():  # warm-up: connections, caches, first-use imports
            closed_loop(target, [bench_pairs()[n] for n in alternating(4)])
        for rep in range(reps):
            # Alternating which goes first, so a drift in the machine's speed hits both.
            order = list(targets) if rep % 2 == 0 else list(reversed(targets))
            for key in order:
                runs[key].append(over_floor(targets[key], alternating(count), floors))
                entry = runs[key][-1]
                print(f"  rep {rep + 1}/{reps} {key:<11} light p50 "
                      f"{entry['latency_ms']['p50']:.1f} ms "
                      f"({entry['over_floor']['p50']:.3f}x floor)", flush=True)  # fmt: skip
    finally:
        driver.close()
        chain.close()
        env.stop_workers()
        chain.delete_queues()
    return {
        "benchmark": "model_chain",
        "machine": machine(),
        "config": {"reps": reps, "count": count, "consumers_per_hop": CONSUMERS_PER_HOP},
        "floor_ms": floors,
        **summarise(runs),
        "runs": runs,
    }


def summarise(runs: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, Any]:
    """Per pipeline the light-load p50 (ms, and over the floor) over the repetitions, and
    FaceVal's p50 over the model chain's."""
    summary = {
        key: {
            "light_p50_ms": spread(e["latency_ms"]["p50"] for e in entries),
            "light_p50_over_floor": spread(e["over_floor"]["p50"] for e in entries),
        }
        for key, entries in runs.items()
    }
    return {
        "summary": summary,
        "faceval_over_model_chain_p50": ratio(
            summary["faceval"]["light_p50_ms"]["median"],
            summary["model_chain"]["light_p50_ms"]["median"],
        ),
    }


def print_report(report: Mapping[str, Any]) -> None:
    rows = [
        [key, s["light_p50_ms"]["median"], s["light_p50_over_floor"]["median"],
         f"{s['light_p50_over_floor']['min']}-{s['light_p50_over_floor']['max']}"]
        for key, s in report["summary"].items()
    ]  # fmt: skip
    print(format_table(["pipeline", "light p50 ms", "p50/floor", "p50/floor min-max"], rows))
    print(f"floor ms {report['floor_ms']}; FaceVal over the model chain "
          f"{report['faceval_over_model_chain_p50']}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    if not (1 <= args.reps <= 20 and 4 <= args.count <= 500):
        parser.error("bounded: reps 1-20, count 4-500")
    with bench_env("model_chain") as env:
        report = run(env, args.reps, args.count)
    print_report(report)
    print(f"\nwrote {write_json('model_chain.json', report)}")


if __name__ == "__main__":
    main()
