"""Item 2: distribution overhead with the real models (and item 4's RSS per worker process).

FaceVal: the real five workers (one process per stage) on this machine, fed without the
gateway (bench.harness.Driver), alternating the two accepted sample pairs (both cross
every stage):
- light load: closed loop, one transaction in flight; latency from first-stage publish to
  the end message, each divided by its pair's floor (per stage the longer of near and far
  analyzer time, summed, measured in-process under the same settings);
- saturation: a burst; steady-state validations per second (middle 80% of completions).
In-process baseline: the same models and pairs through bench.models.InProcessPipeline,
sequentially in one process (the headline ratio's baseline), and in one such process per
core (a stricter ratio: the pipeline's workers use every core).

    python -m bench.distribution [--reps 3] [--light-count 16] [--burst-count 32]
        [--variant default --variant serial ...]

Variants change deployment settings only (environment variables), never code: see VARIANTS.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import queue
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.harness import (
    BenchEnv,
    Driver,
    bench_env,
    burst,
    child_environment,
    closed_loop,
    cpu_seconds,
    rss_mib,
    worker_defaults,
)
from bench.models import InProcessPipeline
from bench.pairs import ACCEPTED, bench_pairs
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
from shared.pipeline import STAGES
from tools.stack import NATIVE_THREADS


@dataclass(frozen=True)
class Variant:
    """Deployment settings only: `env` for the workers and the in-process baseline alike
    (on top of what `Stack.start_worker` gives every worker), `worker_env` for the workers
    alone."""

    description: str
    env: Mapping[str, str] = field(default_factory=dict)
    worker_env: Mapping[str, str] = field(default_factory=dict)
    #: Worker processes per stage (1 where not named).
    replicas: Mapping[str, int] = field(default_factory=dict)


#: Every native pool (OpenBLAS, OpenMP, MKL, OpenCV) at one thread per core: their own
#: default, and the workers' before one thread per pool became the stack's default.
THREADS_PER_CORE = dict.fromkeys(NATIVE_THREADS, str(os.cpu_count() or 1))

VARIANTS: dict[str, Variant] = {
    "default": Variant("production settings: one worker per stage, concurrency 2 (near and "
                       "far at once), one thread per native pool"),
    "threads_per_core": Variant("native pools at one thread per core (their own default)",
                                THREADS_PER_CORE),
    "serial": Variant("one image at a time per stage (FACEVAL_WORKER_CONCURRENCY=1)",
                      worker_env={"FACEVAL_WORKER_CONCURRENCY": "1"}),
    "quality_x2": Variant("two quality workers (the costliest stage)", replicas={"quality": 2}),
    "processes_x2": Variant("two single-threaded worker processes per stage instead of one "
                            "with two task threads (near and far share no GIL)",
                            worker_env={"FACEVAL_WORKER_CONCURRENCY": "1"},
                            replicas=dict.fromkeys(STAGES, 2)),
}  # fmt: skip


def alternating(count: int) -> list[str]:
    return [ACCEPTED[i % len(ACCEPTED)] for i in range(count)]


# --- in-process baseline ----------------------------------------------------------------------


def _inprocess_worker(names: list[str], starts: list[Any], results: Any) -> None:
    """One baseline process: load, warm up, then one chunk per repetition on its signal."""
    pipeline = InProcessPipeline()
    pairs = bench_pairs()
    for name in ACCEPTED:
        pipeline.validate(pairs[name].near, pairs[name].far)
    results.put(("ready", None))
    for start in starts:
        start.wait()
        runs = []
        began = time.perf_counter()
        for name in names:
            run = pipeline.validate(pairs[name].near, pairs[name].far)
            if run.reason != "accepted":
                results.put(("error", f"{name} answered {run.reason} in-process"))
                return
            runs.append((name, run.wall_s, run.floor_s))
        results.put(("done", (began, time.perf_counter(), runs)))


def inprocess_runs(
    count: int, processes: int, reps: int, env: Mapping[str, str]
) -> list[dict[str, Any]]:
    """`count` pairs split over `processes` sequential pipelines, `reps` times."""
    ctx = mp.get_context("spawn")  # this process has threads: never fork it
    starts = [ctx.Event() for _ in range(reps)]
    results = ctx.Queue()
    names = alternating(count)
    chunks = [names[i::processes] for i in range(processes)]
    with child_environment(env):
        procs = [ctx.Process(target=_inprocess_worker, args=(c, starts, results)) for c in chunks]
        for proc in procs:
            proc.start()

    def receive(seconds: float) -> tuple[str, Any]:
        # Polls, so a child that died (an import error, the OOM killer) fails the run at once.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                kind, value = results.get(timeout=0.5)
                return str(kind), value
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError("an in-process baseline process died") from None
        raise RuntimeError(f"the in-process baseline gave no answer in {seconds:.0f} s")

    out = []
    try:
        for _ in procs:
            kind, value = receive(180)
            if kind != "ready":
                raise RuntimeError(str(value))
        for start in starts:
            start.set()
            spans, latencies, floors = [], [], defaultdict(list)
            for _ in procs:
                kind, value = receive(600)
                if kind != "done":
                    raise RuntimeError(str(value))
                began, ended, runs = value
                spans.append((began, ended))
                for name, wall_s, floor_s in runs:
                    latencies.append(wall_s * 1e3)
                    floors[name].append(floor_s * 1e3)
            elapsed = max(e for _, e in spans) - min(b for b, _ in spans)
            out.append({
                "throughput": round(count / elapsed, 4),
                "latency_ms": latency_summary(latencies),
                "floor_ms": {n: round(statistics.median(v), 3) for n, v in floors.items()},
            })  # fmt: skip
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
    return out


# --- FaceVal ------------------------------------------------------------------------------------


def faceval_runs(
    driver: Driver, pids: Sequence[int], mongo: int | None, floors: Mapping[str, float],
    reps: int, light_count: int, burst_count: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """Light-load and saturation runs on the workers that are running now."""
    pairs = bench_pairs()
    entries = []
    for rep in range(reps):
        driver.clear()
        light_names = alternating(light_count)
        loop = closed_loop(driver, [pairs[n] for n in light_names])
        named = list(zip(loop.latencies_ms, light_names, strict=True))
        burst_names = alternating(burst_count)
        cpu_w, cpu_m = cpu_seconds(pids), cpu_seconds([mongo] if mongo else [])
        wave = burst(driver, [pairs[n] for n in burst_names])
        cpu_w, cpu_m = cpu_seconds(pids) - cpu_w, cpu_seconds([mongo] if mongo else []) - cpu_m
        docs = driver.results([*loop.ids, *wave.ids])
        reasons = {d.get("summary_reason") for d in docs.values()}
        if reasons != {"accepted"}:
            raise RuntimeError(f"accepted pairs answered {reasons}")
        entries.append({
            "rep": rep,
            "light": {
                "latency_ms": latency_summary(loop.latencies_ms),
                "by_pair_ms": {n: latency_summary([lat for lat, m in named if m == n])
                               for n in ACCEPTED},
                # Each transaction against its own pair's floor, so the two pairs pool.
                "over_floor": latency_summary([lat / floors[n] for lat, n in named]),
                "total_time_ms": latency_summary(
                    [float(docs[t]["total_time_ms"]) for t in loop.ids]),
            },
            "saturation": {
                "throughput_steady": steady_throughput(wave.completions),
                "throughput_makespan": makespan_throughput(wave.started, wave.completions),
                "latency_ms": latency_summary(wave.latencies_ms),
                "cpu_ms_per_tx_workers": round(cpu_w * 1e3 / burst_count, 2),
                "cpu_ms_per_tx_mongo": round(cpu_m * 1e3 / burst_count, 2),
            },
        })  # fmt: skip
        light, sat = entries[-1]["light"], entries[-1]["saturation"]
        print(f"    rep {rep + 1}/{reps}: light p50 {light['latency_ms']['p50']:.1f} ms "
              f"({light['over_floor']['p50']:.2f}x floor), saturation "
              f"{sat['throughput_steady'] or 0:.2f}/s", flush=True)  # fmt: skip
    return entries


def measure_faceval(
    env: BenchEnv, variant: Variant, floors: Mapping[str, float], reps: int, light_count: int,
    burst_count: int,
) -> dict[str, Any]:  # fmt: skip
    env.restart_mongo()  # each variant on a fresh server: none pays for an earlier one
    env.start_workers("real", variant.replicas, env={**variant.env, **variant.worker_env})
    driver = Driver(env.settings)
    try:
        env.wait_models_loaded()
        rss_loaded = rss_mib(env.worker_pids())
        closed_loop(driver, [bench_pairs()[n] for n in alternating(4)])  # warm-up
        entries = faceval_runs(driver, list(env.worker_pids().values()), env.mongo_pid(), floors,
                               reps, light_count, burst_count)  # fmt: skip
        rss_after = rss_mib(env.worker_pids())
    finally:
        driver.close()
        env.stop_workers()
    return {
        "light_p50_ms": spread(e["light"]["latency_ms"]["p50"] for e in entries),
        "light_p95_ms": spread(e["light"]["latency_ms"]["p95"] for e in entries),
        "light_p50_over_floor": spread(e["light"]["over_floor"]["p50"] for e in entries),
        "light_total_time_p50_ms": spread(e["light"]["total_time_ms"]["p50"] for e in entries),
        "saturation_throughput": spread(e["saturation"]["throughput_steady"] for e in entries),
        "saturation_throughput_makespan": spread(
            e["saturation"]["throughput_makespan"] for e in entries),
        "saturation_latency_p50_ms": spread(
            e["saturation"]["latency_ms"]["p50"] for e in entries),
        "cpu_ms_per_tx_workers": spread(e["saturation"]["cpu_ms_per_tx_workers"] for e in entries),
        "cpu_ms_per_tx_mongo": spread(e["saturation"]["cpu_ms_per_tx_mongo"] for e in entries),
        "rss_mib_after_model_load": rss_loaded,
        "rss_mib_after_bench": rss_after,
        "runs": entries,
    }  # fmt: skip


def median_floors(runs: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Each pair's floor (ms), the median over the in-process repetitions."""
    floors: dict[str, list[float]] = defaultdict(list)
    for entry in runs:
        for name, value in entry["floor_ms"].items():
            floors[name].append(value)
    return {n: round(statistics.median(v), 3) for n, v in floors.items()}


def measure_inprocess(variant: Variant, reps: int, count: int) -> dict[str, Any]:
    cores = os.cpu_count() or 1
    env = {**worker_defaults(), **variant.env}  # the workers' own native-pool settings
    single = inprocess_runs(count, 1, reps, env)
    per_core = inprocess_runs(count, cores, reps, env) if cores > 1 else single
    out = {
        "processes_per_core_run": cores,
        "single_process_throughput": spread(r["throughput"] for r in single),
        "per_core_throughput": spread(r["throughput"] for r in per_core),
        "single_process_latency_p50_ms": spread(r["latency_ms"]["p50"] for r in single),
        "floor_ms": median_floors(single),
    }
    print(f"    in-process: {out['single_process_throughput']['median']:.2f}/s (1 process), "
          f"{out['per_core_throughput']['median']:.2f}/s ({cores} processes)",
          flush=True)  # fmt: skip
    return out


def run(
    env: BenchEnv, reps: int = 3, light_count: int = 16, burst_count: int = 32,
    variants: Sequence[str] = ("default",),
) -> dict[str, Any]:  # fmt: skip
    baselines: dict[frozenset[tuple[str, str]], dict[str, Any]] = {}
    results: dict[str, Any] = {}
    for name in variants:
        variant = VARIANTS[name]
        print(f"  variant {name}: {variant.description}", flush=True)
        key = frozenset(variant.env.items())
        if key not in baselines:
            baselines[key] = measure_inprocess(variant, reps, burst_count)
        inprocess = baselines[key]
        faceval = measure_faceval(env, variant, inprocess["floor_ms"], reps, light_count,
                                  burst_count)  # fmt: skip
        throughput = faceval["saturation_throughput"]["median"]
        results[name] = {
            "description": variant.description,
            "env": dict(variant.env),
            "worker_env": dict(variant.worker_env),
            "replicas": dict(variant.replicas),
            "inprocess": inprocess,
            "faceval": faceval,
            "ratios": {
                # The baseline: the analyzers in one process, sequentially.
                "throughput_ratio_saturation": ratio(
                    throughput, inprocess["single_process_throughput"]["median"]),
                # Stricter: one such process per core, as FaceVal's workers use every core.
                "throughput_ratio_saturation_per_core": ratio(
                    throughput, inprocess["per_core_throughput"]["median"]),
                "light_load_p50_over_floor": faceval["light_p50_over_floor"]["median"],
            },
        }  # fmt: skip
    headline = results.get("default") or next(iter(results.values()))
    return {
        "benchmark": "distribution",
        "machine": machine(),
        "config": {"reps": reps, "light_count": light_count, "burst_count": burst_count,
                   "pairs": list(ACCEPTED), "variants": list(variants)},
        "variants": results,
        "headline_variant": "default" if "default" in results else next(iter(results)),
        **headline["ratios"],
    }  # fmt: skip


def print_report(report: Mapping[str, Any]) -> None:
    rows = []
    for name, v in report["variants"].items():
        inproc, fv, r = v["inprocess"], v["faceval"], v["ratios"]
        rows.append([name, inproc["single_process_throughput"]["median"],
                     inproc["per_core_throughput"]["median"], fv["saturation_throughput"]["median"],
                     r["throughput_ratio_saturation"], fv["light_p50_ms"]["median"],
                     round(statistics.fmean(inproc["floor_ms"].values()), 1),
                     r["light_load_p50_over_floor"]])  # fmt: skip
    print(format_table(["variant", "in-proc 1p /s", "in-proc Np /s", "FaceVal /s", "ratio",
                        "light p50 ms", "floor ms", "p50/floor"], rows))  # fmt: skip
    for name, v in report["variants"].items():
        print(f"RSS MiB after model load ({name}): {v['faceval']['rss_mib_after_model_load']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--light-count", type=int, default=16)
    parser.add_argument("--burst-count", type=int, default=32)
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS))
    parser.add_argument(
        "--mongo-options", default="", help="MongoDB URL options, e.g. retryWrites=false"
    )
    args = parser.parse_args()
    if not (1 <= args.reps <= 20 and 4 <= args.light_count <= 500
            and 4 <= args.burst_count <= 500):  # fmt: skip
        parser.error("bounded: reps 1-20, counts 4-500")
    with bench_env("distribution", mongo_options=args.mongo_options) as env:
        report = run(env, args.reps, args.light_count, args.burst_count,
                     args.variant or ["default"])  # fmt: skip
    print_report(report)
    print(f"\nwrote {write_json('distribution.json', report)}")


if __name__ == "__main__":
    main()
