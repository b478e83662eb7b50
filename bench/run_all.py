"""Every benchmark, in one run, on one isolated stack: `make bench`.

    python -m bench.run_all [--reps 3] [--quick]

Order: models in-process (item 4), messaging overhead with no-op analyzers (item 1),
distribution overhead with the real models (item 2, with RSS per worker for item 4),
early termination (item 3), the gateway alone (item 5). Each writes its own
bench/results/<name>.json; this writes bench/results/latest.json with the headline ratios
against their targets, the raw figures behind them and (under "markdown", also printed)
the tables docs/benchmarks.md quotes. Bounded: about 10 minutes on 2 cores (--quick: 3).

The machine note records how busy the machine was: for each section, the CPU time of
every process on the machine against that of this run's own processes (the rest is
other users' work, plus the RabbitMQ and Redis servers this run shares with them).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Iterator, Mapping
from typing import Any

import psutil

from bench import distribution, early_termination, gateway_bench, messaging, models, mongo_ops
from bench.harness import BenchEnv, run_in_child, worker_defaults
from bench.stats import (
    format_table,
    load_average,
    machine,
    markdown_table,
    meets,
    source_commit,
    spread_cell,
    write_json,
)

#: name -> (comparison, target). Ratios are FaceVal over its reference.
TARGETS: dict[str, tuple[str, float]] = {
    "messaging_overhead_ratio_p50": ("<=", 1.5),
    "throughput_ratio_saturation": (">=", 0.85),
    #: FaceVal at saturation over one sequential in-process pipeline per core: the stricter
    #: comparison (throughput_ratio_saturation compares with one process in all).
    "throughput_ratio_per_core": (">=", 0.85),
    "light_load_p50_over_floor": ("<=", 1.15),
    "reject_cost_ratio_face_detector": ("<=", 0.20),
}

#: The distribution variants run_all measures (bench.distribution.VARIANTS; the others run
#: with `python -m bench.distribution --variant NAME`), within the 15-minute budget.
DISTRIBUTION_VARIANTS = ("default", "serial")


def own_cpu_seconds() -> float:
    """CPU of this process, its reaped children and its live descendants."""
    me = psutil.Process()
    times = me.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            t = child.cpu_times()
            total += t.user + t.system
    return total


def machine_busy_seconds() -> float:
    t = psutil.cpu_times()
    return float(sum(t) - t.idle - getattr(t, "iowait", 0.0))


@contextlib.contextmanager
def section(name: str, notes: dict[str, Any]) -> Iterator[None]:
    print(f"\n== {name} ==", flush=True)
    wall, busy, own = time.monotonic(), machine_busy_seconds(), own_cpu_seconds()
    try:
        yield
    finally:
        wall = time.monotonic() - wall
        busy = machine_busy_seconds() - busy
        own = own_cpu_seconds() - own
        cores = psutil.cpu_count() or 1
        notes[name] = {
            "wall_s": round(wall, 1),
            "machine_cpu_s": round(busy, 1),
            "own_cpu_s": round(own, 1),
            "other_cpu_share": round(max(0.0, busy - own) / (wall * cores), 3) if wall else None,
            "load_average_after": load_average(),
        }
        print(f"   ({name}: {wall:.0f} s; other processes used "
              f"{notes[name]['other_cpu_share']:.0%} of the machine)", flush=True)  # fmt: skip


def headline(reports: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The five ratios of the output contract, the raw figures behind them, the targets."""
    msg, dist = reports["messaging"], reports["distribution"]
    early, gw = reports["early_termination"], reports["gateway"]
    base = dist["variants"][dist["headline_variant"]]
    v = msg["variants"]
    figures: dict[str, Any] = {
        "messaging_overhead_ratio_p50": msg["messaging_overhead_ratio_p50"],
        "throughput_ratio_saturation": dist["throughput_ratio_saturation"],
        "throughput_ratio_per_core": base["ratios"]["throughput_ratio_saturation_per_core"],
        "light_load_p50_over_floor": dist["light_load_p50_over_floor"],
        "reject_cost_ratio_face_detector": early["reject_cost_ratio_face_detector"],
        "raw": {
            "faceval_noop_p50_ms": v["faceval_noop"]["closed_loop_ms"]["p50"]["median"],
            "faceval_noop_p99_ms": v["faceval_noop"]["closed_loop_ms"]["p99"]["median"],
            "raw_chain_fetch_decode_p50_ms":
                v["raw_fetch_decode"]["closed_loop_ms"]["p50"]["median"],
            "raw_chain_fetch_p50_ms": v["raw_fetch"]["closed_loop_ms"]["p50"]["median"],
            "messaging_overhead_ratio_p50_vs_fetch_only": msg["ratios"]["p50_vs_raw_fetch"],
            "faceval_noop_burst_per_s": v["faceval_noop"]["burst_throughput_steady"]["median"],
            "raw_chain_fetch_decode_burst_per_s":
                v["raw_fetch_decode"]["burst_throughput_steady"]["median"],
            "faceval_saturation_per_s": base["faceval"]["saturation_throughput"]["median"],
            "inprocess_single_process_per_s":
                base["inprocess"]["single_process_throughput"]["median"],
            "inprocess_per_core_per_s": base["inprocess"]["per_core_throughput"]["median"],
            "throughput_ratio_saturation_per_core":
                base["ratios"]["throughput_ratio_saturation_per_core"],
            "light_load_p50_ms": base["faceval"]["light_p50_ms"]["median"],
            "floor_ms": base["inprocess"]["floor_ms"],
            "reject_cpu_ms_per_pair": {
                k: early["kinds"][k]["cpu_ms_per_pair"]["median"] for k in early["kinds"]},
            "gateway_requests_per_s": {
                c: lv["requests_per_s"]["median"] for c, lv in gw["levels"].items()},
            "gateway_p50_ms": {
                c: lv["latency_p50_ms"]["median"] for c, lv in gw["levels"].items()},
            "mongodb_wire_ms_by_collection_size":
                reports["mongo_ops"]["median_ms_by_collection_size"],
            "mongodb_wire_ms_retryable_writes": reports["mongo_ops"]["median_ms_retryable_writes"],
        },
        "with_other_settings": {
            name: variant["ratios"] for name, variant in dist["variants"].items()},
    }  # fmt: skip
    figures["targets"] = {}
    for key, (op, target) in TARGETS.items():
        value = figures[key]
        figures["targets"][key] = {"value": value, "target": f"{op} {target}",
                                   "met": meets(value, op, target)}  # fmt: skip
    return figures


def markdown(report: Mapping[str, Any]) -> str:
    """The tables docs/benchmarks.md quotes (median, and min-max over the repetitions)."""
    out = []
    rows = [[k, t["value"], t["target"], "yes" if t["met"] else "no"]
            for k, t in report["targets"].items()]  # fmt: skip
    out += ["### Targets", "", markdown_table(["ratio", "measured", "target", "met"], rows), ""]
    msg = report["sections"]["messaging"]
    rows = []
    for name, v in msg["variants"].items():
        cl = v["closed_loop_ms"]
        rows.append([name, spread_cell(cl["p50"]), spread_cell(cl["p95"]), spread_cell(cl["p99"]),
                     spread_cell(v["burst_throughput_steady"], 1),
                     spread_cell(v["burst_cpu_ms_per_tx"]["total"], 1)])  # fmt: skip
    out += [
        "### Messaging (no-op analyzers), ms and transactions/s",
        "",
        markdown_table(["variant", "p50", "p95", "p99", "burst /s", "CPU ms/tx"], rows),
        "",
    ]
    dist = report["sections"]["distribution"]
    rows = []
    for name, v in dist["variants"].items():
        ip, fv, r = v["inprocess"], v["faceval"], v["ratios"]
        floor = statistics.fmean(ip["floor_ms"].values()) if ip["floor_ms"] else None
        rows.append([name, spread_cell(ip["single_process_throughput"]),
                     spread_cell(ip["per_core_throughput"]),
                     spread_cell(fv["saturation_throughput"]), r["throughput_ratio_saturation"],
                     r["throughput_ratio_saturation_per_core"],
                     spread_cell(fv["light_p50_ms"], 1), floor,
                     r["light_load_p50_over_floor"],
                     spread_cell(fv["cpu_ms_per_tx_workers"], 0),
                     spread_cell(fv["cpu_ms_per_tx_mongo"], 0)])  # fmt: skip
    out += ["### Real models: FaceVal against in-process", "",
            markdown_table(["variant", "in-process 1 proc /s", "in-process 1 proc/core /s",
                            "FaceVal /s", "ratio", "ratio per core", "light p50 ms",
                            "floor ms", "p50/floor",
                            "worker CPU ms/pair", "MongoDB CPU ms/pair"], rows), ""]  # fmt: skip
    early = report["sections"]["early_termination"]
    rows = []
    for kind, k in early["kinds"].items():
        r = early["ratios_vs_accepted"].get(kind, {})
        rows.append([f"{kind} ({k['pair']}{', simulated' if k['simulated'] else ''})",
                     spread_cell(k["cpu_ms_per_pair"], 0), r.get("cpu", 1.0),
                     spread_cell(k["latency_p50_ms"], 1), r.get("latency_p50", 1.0),
                     k["analyzer_ms_per_pair"], r.get("analyzers", 1.0)])  # fmt: skip
    out += ["### Early termination", "",
            markdown_table(["decided at", "CPU ms/pair", "CPU ratio", "p50 ms", "p50 ratio",
                            "models ms", "models ratio"], rows), ""]  # fmt: skip
    rows = []
    for pair in ("astronaut", "group_member"):
        costs = report["sections"]["models"]["pairs"][pair]
        for key, figure in costs["stage_ms"].items():
            rows.append([f"{pair} {key}", spread_cell(figure)])
        rows.append([f"{pair} floor", spread_cell(costs["floor_ms"])])
    rss = dist["variants"][dist["headline_variant"]]["faceval"]["rss_mib_after_model_load"]
    out += [
        "### Per-stage model cost (ms per image) and RSS",
        "",
        markdown_table(["stage", "ms"], rows),
        "",
        markdown_table(["worker", "RSS MiB after model load"], list(rss.items())),
        "",
    ]
    ops = report["sections"]["mongo_ops"]["median_ms_by_collection_size"]
    names = list(next(iter(ops.values())))
    out += [
        "### Embedded MongoDB-wire server, median ms per operation",
        "",
        markdown_table(["documents", *names], [[n, *v.values()] for n, v in ops.items()]),
        "",
        *(
            f"- {k}: {v} ms"
            for k, v in report["sections"]["mongo_ops"]["median_ms_retryable_writes"].items()
        ),
        "",
    ]
    gw = report["sections"]["gateway"]
    rows = [[c, spread_cell(v["requests_per_s"], 1), spread_cell(v["latency_p50_ms"], 1),
             spread_cell(v["latency_p99_ms"], 1), spread_cell(v["cpu_ms_per_request_gateway"], 1)]
            for c, v in gw["levels"].items()]  # fmt: skip
    out += [
        "### Gateway upload path",
        "",
        markdown_table(["clients", "req/s", "p50 ms", "p99 ms", "gateway CPU ms/req"], rows),
    ]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repetition, small counts")
    args = parser.parse_args()
    if not 1 <= args.reps <= 10:
        parser.error("--reps: 1 to 10")
    reps = 1 if args.quick else args.reps
    scale = 0.25 if args.quick else 1.0
    started = time.monotonic()
    commit = source_commit()  # before any section: the tree the figures were measured on
    notes: dict[str, Any] = {}
    reports: dict[str, Any] = {}
    env = BenchEnv.create("all")
    try:
        with section("models", notes):
            # In a fresh process with the workers' native-pool settings.
            reports["models"] = run_in_child(worker_defaults(), models.run, reps)
            models.print_report(reports["models"])
        with section("messaging", notes):
            env.restart_mongo()
            reports["messaging"] = messaging.run(env, reps, max(10, int(100 * scale)),
                                                 max(20, int(200 * scale)))  # fmt: skip
            messaging.print_report(reports["messaging"])
        with section("distribution", notes):
            env.restart_mongo()
            variants = DISTRIBUTION_VARIANTS[:2] if args.quick else DISTRIBUTION_VARIANTS
            light, wave = max(4, int(12 * scale)), max(8, int(30 * scale))
            reports["distribution"] = distribution.run(env, reps, light, wave, variants)
            distribution.print_report(reports["distribution"])
        with section("early_termination", notes):
            env.restart_mongo()
            reports["early_termination"] = early_termination.run(
                env, reps, max(3, int(6 * scale)), max(4, int(10 * scale))
            )
            early_termination.print_report(reports["early_termination"])
        with section("mongo_ops", notes):
            reports["mongo_ops"] = mongo_ops.run(ops=20 if args.quick else 40,
                                                 writes=3000 if args.quick else 11000)  # fmt: skip
            mongo_ops.print_report(reports["mongo_ops"])
        with section("gateway", notes):
            env.restart_mongo()
            reports["gateway"] = gateway_bench.run(env, reps)
            gateway_bench.print_report(reports["gateway"])
    finally:
        env.close()
    for name, report in reports.items():
        write_json(f"{name}.json", report)
    summary = headline(reports)
    total = time.monotonic() - started
    latest = {
        "benchmark": "all",
        "commit": commit,
        **{k: summary[k] for k in TARGETS},
        "targets": summary["targets"],
        "raw": summary["raw"],
        "with_other_settings": summary["with_other_settings"],
        "machine": {**machine(), "sections": notes},
        "total_seconds": round(total, 1),
        "quick": args.quick,
        "reps": reps,
        "sections": reports,
    }
    # The tables docs/benchmarks.md quotes, also printed below (results hold JSON only).
    latest["markdown"] = markdown(latest)
    path = write_json("latest.json", latest)
    print("\n== tables for docs/benchmarks.md ==\n")
    print(latest["markdown"])
    print("\n== headline ==")
    rows = [[k, t["value"], t["target"], "yes" if t["met"] else "NO"]
            for k, t in summary["targets"].items()]  # fmt: skip
    print(format_table(["ratio", "measured", "target", "met"], rows))
    print(f"\nall benchmarks in {total / 60:.1f} min; wrote {path}")
    if total > 15 * 60:
        print("warning: longer than the 15-minute budget", file=sys.stderr)


if __name__ == "__main__":
    main()
