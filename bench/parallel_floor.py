"""The analyzers' critical path with near and far really at once, against one at a time.

    python -m bench.parallel_floor [--reps 5]

`light_load_p50_over_floor` divides FaceVal's closed-loop latency by a floor that assumes
running near and far at the same time is free: per stage the longer side, each side timed
alone (bench.models). On 2 cores the two analyses could slow each other (shared caches,
memory bandwidth), which no pipeline design removes. This measures by how much: two
spawned processes, one per image, each with every stage's production models and the
workers' native thread settings, run each stage of the accepted pairs once untimed (so
the timed runs find the stage's weights equally warm), then alone (near while far waits,
then far) and together (a barrier starts both), alternating which comes first per
repetition. Per stage the longer side is kept, as the floor does, and summed over the
stages. Decoding is timed apart (the floor counts none). Nothing else runs: no broker, no
database, no consumers. Writes bench/results/parallel_floor.json.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from collections.abc import Mapping, Sequence
from multiprocessing.synchronize import Barrier
from typing import Any

from bench.harness import child_environment, worker_defaults
from bench.pairs import ACCEPTED, bench_pairs
from bench.stats import format_table, machine, ratio, spread, write_json
from shared.analysis import Face, ImageSide
from shared.imaging import decode_rgb
from shared.pipeline import Policy, analyze_image
from shared.settings import get_settings
from tools.stages import in_process_pipeline

SIDES: tuple[ImageSide, ImageSide] = ("near", "far")
#: Per repetition, the order of the phases within each stage (alternated). Each stage first
#: runs once untimed on both sides, so every timed run finds its weights equally warm.
PHASE_ORDERS = (("warm", "near", "far", "both"), ("warm", "both", "near", "far"))

#: side -> [(pair, phase -> stage -> seconds, decode seconds)], one entry per repetition.
SideRuns = list[tuple[str, dict[str, dict[str, float]], float]]


def run_side(side: ImageSide, barrier: Barrier, pairs: Sequence[str], reps: int) -> SideRuns:
    """One image's process: every stage of every pair, alone and together, per repetition."""
    settings = get_settings()
    stages = in_process_pipeline(settings).stages
    policy = Policy.build(settings)
    samples = bench_pairs()
    runs: SideRuns = []
    for rep in range(reps):
        for name in pairs:
            data = samples[name].near if side == "near" else samples[name].far
            started = time.perf_counter()
            image = decode_rgb(data)
            decode_s = time.perf_counter() - started
            face: Face | None = None
            times: dict[str, dict[str, float]] = {"alone": {}, "together": {}}
            for definition, models in stages:
                # Both phases of a stage get the same input: the face of the stages before.
                given = face
                for phase in PHASE_ORDERS[rep % 2]:
                    barrier.wait()
                    if phase not in (side, "both", "warm"):
                        continue
                    started = time.perf_counter()
                    analysis = analyze_image(definition, models, image, given, policy)
                    elapsed = time.perf_counter() - started
                    if phase != "warm":
                        key = "together" if phase == "both" else "alone"
                        times[key][definition.name] = elapsed
                    if "face" in definition.provides and analysis.record.face is not None:
                        face = analysis.record.face
                barrier.wait()
            runs.append((name, times, decode_s))
    return runs


def _side_process(side: ImageSide, barrier: Barrier, pairs: Sequence[str], reps: int,
                  results: Any) -> None:  # fmt: skip
    results.put((side, run_side(side, barrier, pairs, reps)))


def summarise(runs: Mapping[str, SideRuns]) -> dict[str, Any]:
    """Per pair: the floor alone and together (ms, over repetitions), their ratio, and the
    per-stage figures behind them."""
    by_pair: dict[str, dict[str, list[float]]] = {}
    stage_ms: dict[str, dict[str, dict[str, list[float]]]] = {}
    for (name, near, near_decode), (_, far, far_decode) in zip(
        runs["near"], runs["far"], strict=True
    ):
        figures = by_pair.setdefault(name, {"alone": [], "together": [], "decode": []})
        for phase in ("alone", "together"):
            longer = {s: max(near[phase][s], far[phase][s]) for s in near[phase]}
            figures[phase].append(sum(longer.values()) * 1e3)
            for stage, seconds in longer.items():
                stage_ms.setdefault(name, {}).setdefault(stage, {}).setdefault(phase, []).append(
                    seconds * 1e3
                )
        figures["decode"].append(max(near_decode, far_decode) * 1e3)
    pairs: dict[str, Any] = {}
    for name, figures in by_pair.items():
        alone, together = spread(figures["alone"]), spread(figures["together"])
        pairs[name] = {
            "floor_alone_ms": alone,
            "floor_together_ms": together,
            "together_over_alone": ratio(together["median"], alone["median"]),
            "decode_ms": spread(figures["decode"]),
            "stages_ms": {
                stage: {phase: spread(values) for phase, values in phases.items()}
                for stage, phases in stage_ms[name].items()
            },
        }
    return {"pairs": pairs}


def run(reps: int, pairs: Sequence[str] = ACCEPTED) -> dict[str, Any]:
    ctx = mp.get_context("spawn")  # fresh processes size their native thread pools at start
    barrier, results = ctx.Barrier(len(SIDES)), ctx.Queue()
    with child_environment(worker_defaults()):
        processes = [
            ctx.Process(target=_side_process, args=(side, barrier, list(pairs), reps, results))
            for side in SIDES
        ]
        for process in processes:
            process.start()
    got = dict(results.get(timeout=600) for _ in processes)
    for process in processes:
        process.join(timeout=60)
    return {"benchmark": "parallel_floor", "reps": reps, "machine": machine(), **summarise(got)}


def print_report(report: Mapping[str, Any]) -> None:
    rows = []
    for name, pair in report["pairs"].items():
        for stage, phases in pair["stages_ms"].items():
            alone, together = phases["alone"]["median"], phases["together"]["median"]
            rows.append([f"{name} {stage}", alone, together, ratio(together, alone)])
        rows.append([f"{name} FLOOR", pair["floor_alone_ms"]["median"],
                     pair["floor_together_ms"]["median"], pair["together_over_alone"]])  # fmt: skip
        rows.append([f"{name} decode (longer side)", pair["decode_ms"]["median"], None, None])
    print(format_table(["ms (median)", "one at a time", "both at once", "ratio"], rows))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args(argv)
    report = run(args.reps)
    print_report(report)
    print(f"wrote {write_json('parallel_floor.json', report)}")


if __name__ == "__main__":
    main()
