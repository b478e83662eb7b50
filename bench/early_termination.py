"""Item 3: what early termination saves. A pair rejected at face detection, at quality and at
PAD, against an accepted pair, on the real workers (production settings).

Pairs: `astronaut` (accepted), `no_face` (rejected by the detector), `blurred` (rejected
by quality) and `print_attack` (rejected by PAD). No bundled sample is a presentation
attack, so `print_attack` is simulated: the accepted astronaut pair printed and
photographed again (`tools.eval.simulate.print_attack`, bench/pairs.py), which MiniFASNet
rejects.

Cost of a pair, per kind:
- cpu: CPU time of the five workers and the MongoDB-wire server per pair, over a burst
  (the resources a pair consumes; RabbitMQ and Redis are shared with other users of
  this machine and left out);
- work: the runtime's own per-image `time_ms` (decode plus models) summed over the
  stages that ran;
- latency: closed-loop p50 from first-stage publish to the end message;
- analyzers: the models alone, in-process (bench.models), for reference.
The headline `reject_cost_ratio_face_detector` is the cpu cost of `no_face` over `astronaut`.

    python -m bench.early_termination [--reps 3] [--latency-count 6] [--burst-count 10]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from bench.harness import (
    BenchEnv,
    Driver,
    bench_env,
    burst,
    closed_loop,
    cpu_seconds,
    run_in_child,
    worker_defaults,
)
from bench.models import InProcessPipeline
from bench.pairs import bench_pairs
from bench.stats import format_table, latency_summary, machine, ratio, spread, write_json

#: Outcome -> pair.
KINDS: dict[str, str] = {
    "accepted": "astronaut",
    "face_detector": "no_face",
    "quality": "blurred",
    "pad": "print_attack",
}


def work_ms(doc: Mapping[str, Any]) -> float:
    """Sum of the runtime's per-image execution times over the stages that ran."""
    total = 0.0
    for sides in (doc.get("stages") or {}).values():
        for side in ("near", "far"):
            record = sides.get(side) or {}
            total += float(record.get("time_ms") or 0.0)
    return total


def analyzer_ms(reps: int = 5) -> dict[str, float]:
    """Median in-process model time per pair (both images, every stage that runs)."""
    pipeline = InProcessPipeline()
    pairs = bench_pairs()
    out = {}
    for kind, name in KINDS.items():
        pipeline.validate(pairs[name].near, pairs[name].far)
        runs = [pipeline.validate(pairs[name].near, pairs[name].far) for _ in range(reps)]
        out[kind] = round(statistics.median(r.serial_s for r in runs) * 1e3, 3)
    return out


def measure(
    driver: Driver, pids: Sequence[int], reps: int, latency_count: int, burst_count: int
) -> dict[str, list[dict[str, Any]]]:
    pairs = bench_pairs()
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in KINDS}
    for rep in range(reps):
        driver.clear()
        for kind, name in KINDS.items():
            pair = pairs[name]
            loop = closed_loop(driver, [pair] * latency_count)
            before = cpu_seconds(pids)
            wave = burst(driver, [pair] * burst_count)
            used = cpu_seconds(pids) - before
            docs = driver.results([*loop.ids, *wave.ids])
            got = {(d.get("summary_reason"), d.get("decided_by")) for d in docs.values()}
            if got != {(pair.expected_reason, pair.expected_stage)}:
                raise RuntimeError(f"{name}: expected {pair.expected_reason} at "
                                   f"{pair.expected_stage}, got {got}")  # fmt: skip
            stages_run = {len(d.get("stages") or {}) for d in docs.values()}
            runs[kind].append({
                "rep": rep,
                "latency_ms": latency_summary(loop.latencies_ms),
                "cpu_ms_per_pair": round(used * 1e3 / burst_count, 2),
                "work_ms_per_pair": round(statistics.median(work_ms(d) for d in docs.values()), 3),
                "stages_run": sorted(stages_run),
            })  # fmt: skip
            last = runs[kind][-1]
            print(f"    rep {rep + 1}/{reps} {kind:<14} p50 {last['latency_ms']['p50']:7.1f} ms, "
                  f"cpu {last['cpu_ms_per_pair']:7.1f} ms/pair", flush=True)  # fmt: skip
    return runs


def run(
    env: BenchEnv, reps: int = 3, latency_count: int = 6, burst_count: int = 10
) -> dict[str, Any]:
    analyzers = run_in_child(worker_defaults(), analyzer_ms)  # the workers' pool settings
    env.start_workers("real")
    driver = Driver(env.settings)
    try:
        env.wait_models_loaded()
        pids = [*env.worker_pids().values()]
        mongo = env.mongo_pid()
        if mongo:
            pids.append(mongo)
        pairs = bench_pairs()
        closed_loop(driver, [pairs[n] for n in KINDS.values()])  # warm-up
        runs = measure(driver, pids, reps, latency_count, burst_count)
    finally:
        driver.close()
        env.stop_workers()
    kinds: dict[str, Any] = {}
    for kind, entries in runs.items():
        pair = bench_pairs()[KINDS[kind]]
        kinds[kind] = {
            "pair": pair.name,
            "simulated": pair.simulated,
            "decided_by": pair.expected_stage,
            "stages_run": entries[0]["stages_run"],
            "latency_p50_ms": spread(e["latency_ms"]["p50"] for e in entries),
            "cpu_ms_per_pair": spread(e["cpu_ms_per_pair"] for e in entries),
            "work_ms_per_pair": spread(e["work_ms_per_pair"] for e in entries),
            "analyzer_ms_per_pair": analyzers[kind],
            "runs": entries,
        }
    accepted = kinds["accepted"]
    ratios = {}
    for kind in ("face_detector", "quality", "pad"):
        k = kinds[kind]
        ratios[kind] = {
            "cpu": ratio(k["cpu_ms_per_pair"]["median"], accepted["cpu_ms_per_pair"]["median"]),
            "work": ratio(k["work_ms_per_pair"]["median"], accepted["work_ms_per_pair"]["median"]),
            "latency_p50": ratio(k["latency_p50_ms"]["median"],
                                 accepted["latency_p50_ms"]["median"]),
            "analyzers": ratio(k["analyzer_ms_per_pair"], accepted["analyzer_ms_per_pair"]),
        }  # fmt: skip
    return {
        "benchmark": "early_termination",
        "machine": machine(),
        "config": {
            "reps": reps,
            "latency_count": latency_count,
            "burst_count": burst_count,
            "pad_reject_simulated": True,
        },
        "kinds": kinds,
        "ratios_vs_accepted": ratios,
        "reject_cost_ratio_face_detector": ratios["face_detector"]["cpu"],
    }


def print_report(report: Mapping[str, Any]) -> None:
    rows = []
    for kind, k in report["kinds"].items():
        r = report["ratios_vs_accepted"].get(kind, {})
        rows.append([f"{kind} ({k['pair']}{', simulated' if k['simulated'] else ''})",
                     k["cpu_ms_per_pair"]["median"], r.get("cpu", 1.0),
                     k["work_ms_per_pair"]["median"], k["latency_p50_ms"]["median"],
                     r.get("latency_p50", 1.0), k["analyzer_ms_per_pair"],
                     r.get("analyzers", 1.0)])  # fmt: skip
    print(format_table(["decided at (pair)", "cpu ms/pair", "cpu ratio", "work ms",
                        "p50 ms", "p50 ratio", "models ms", "models ratio"], rows))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--latency-count", type=int, default=6)
    parser.add_argument("--burst-count", type=int, default=10)
    args = parser.parse_args()
    if not (1 <= args.reps <= 20 and 2 <= args.latency_count <= 200
            and 2 <= args.burst_count <= 200):  # fmt: skip
        parser.error("bounded: reps 1-20, counts 2-200")
    with bench_env("early") as env:
        report = run(env, args.reps, args.latency_count, args.burst_count)
    print_report(report)
    print(f"\nwrote {write_json('early_termination.json', report)}")


if __name__ == "__main__":
    main()
