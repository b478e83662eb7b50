"""Per-stage model cost (item 4) and the in-process baseline the pipeline is compared with.

`InProcessPipeline` runs the production stages' own models (each stage's
`build_models(settings)`) through `shared.runtime.analyze_image`, in one process and one
thread, near then far, stage after stage, deciding each stage with the production rule
(`shared.pipeline.decide`, the workers' own) and stopping at the first
stage that does not pass: the same early termination as the distributed pipeline, minus
the queues, the database and the per-stage decode.

    python -m bench.models [--reps 3]

Prints per model and per stage the execution time per image at the images' native size
(each pair's JPEG decoded once, as a monolith would), the latency floor of each pair
(per stage the longer of near and far, summed), and writes bench/results/models.json.
Measured in a fresh process with the native thread-pool settings the stack gives workers.
RSS per worker process is measured on the real workers by bench.distribution.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.harness import run_in_child, worker_defaults
from bench.pairs import BenchPair, bench_pairs
from bench.stats import format_table, machine, spread, write_json
from shared.analysis import Image, ImageSide
from shared.imaging import decode_rgb
from shared.settings import Settings, get_settings
from tools.stages import in_process_pipeline


@dataclass
class PairRun:
    """One pair through the in-process pipeline."""

    reason: str
    decided_by: str | None
    wall_s: float
    decode_s: float
    #: stage -> side -> seconds of the stage's models.
    stage_s: dict[str, dict[str, float]] = field(default_factory=dict)
    #: stage -> side -> model key -> seconds.
    model_s: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)

    @property
    def floor_s(self) -> float:
        """Critical path of the analyzers alone: per stage the longer of near and far."""
        return sum(max(sides.values()) for sides in self.stage_s.values())

    @property
    def serial_s(self) -> float:
        """Both images of every stage one after the other (one worker, one thread)."""
        return sum(sum(sides.values()) for sides in self.stage_s.values())


class InProcessPipeline:
    """The production pipeline in this process (shared.pipeline.InProcessPipeline: the
    workers' own decision function), timed per pair with the JPEG decode."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.pipeline = in_process_pipeline(settings or get_settings())
        self.load_s = self.pipeline.load_s

    def validate(self, near: bytes, far: bytes) -> PairRun:
        started = time.perf_counter()
        images: dict[ImageSide, Image] = {"near": decode_rgb(near), "far": decode_rgb(far)}
        decode_s = time.perf_counter() - started
        result = self.pipeline.run(images)
        return PairRun(
            reason=result.summary.reason,
            decided_by=result.decided_by,
            wall_s=time.perf_counter() - started,
            decode_s=decode_s,
            stage_s={
                n: {side: t for side, t in st.seconds.items()} for n, st in result.stages.items()
            },
            model_s={
                name: {side: dict(t) for side, t in stage.model_seconds.items()}
                for name, stage in result.stages.items()
            },
        )


def model_costs(
    pipeline: InProcessPipeline, pairs: Sequence[BenchPair], reps: int
) -> dict[str, Any]:
    """Per pair: per model, per stage (ms per image) and the floor, min/median/max over reps."""
    out: dict[str, Any] = {}
    for pair in pairs:
        runs = [pipeline.validate(pair.near, pair.far) for _ in range(reps)]
        models: dict[str, list[float]] = defaultdict(list)
        stages: dict[str, list[float]] = defaultdict(list)
        for run in runs:
            for stage, sides in run.model_s.items():
                for side, per_model in sides.items():
                    for key, seconds in per_model.items():
                        models[f"{stage}/{key}/{side}"].append(seconds * 1e3)
            for stage, per_side in run.stage_s.items():
                for side, seconds in per_side.items():
                    stages[f"{stage}/{side}"].append(seconds * 1e3)
        out[pair.name] = {
            "reason": runs[0].reason,
            "decided_by": runs[0].decided_by,
            "expected_reason": pair.expected_reason,
            "simulated": pair.simulated,
            "model_ms": {k: spread(v) for k, v in models.items()},
            "stage_ms": {k: spread(v) for k, v in stages.items()},
            "decode_pair_ms": spread(r.decode_s * 1e3 for r in runs),
            "floor_ms": spread(r.floor_s * 1e3 for r in runs),
            "serial_ms": spread(r.serial_s * 1e3 for r in runs),
            "wall_ms": spread(r.wall_s * 1e3 for r in runs),
        }
    return out


def run(reps: int = 3, pipeline: InProcessPipeline | None = None) -> dict[str, Any]:
    pipeline = pipeline or InProcessPipeline()
    pairs = list(bench_pairs().values())
    for pair in pairs:  # warm-up: first inferences allocate arenas and fill caches
        pipeline.validate(pair.near, pair.far)
    costs = model_costs(pipeline, pairs, reps)
    return {
        "benchmark": "models",
        "machine": machine(),
        "reps": reps,
        "model_load_s": {k: round(v, 3) for k, v in pipeline.load_s.items()},
        "pairs": costs,
    }


def print_report(report: Mapping[str, Any]) -> None:
    rows = []
    for name, pair in report["pairs"].items():
        for key, figure in pair["model_ms"].items():
            rows.append([f"{name}: {key}", figure["median"], figure["min"], figure["max"]])
    print(format_table(["model per image (ms)", "median", "min", "max"], rows))
    print()
    rows = []
    for name, pair in report["pairs"].items():
        for key, figure in pair["stage_ms"].items():
            rows.append([f"{name}: {key}", figure["median"], figure["min"], figure["max"]])
        rows.append([f"{name}: decode near+far", *_mmm(pair["decode_pair_ms"])])
        rows.append([f"{name}: FLOOR (max side/stage)", *_mmm(pair["floor_ms"])])
        rows.append([f"{name}: serial (both sides)", *_mmm(pair["serial_ms"])])
        rows.append([f"{name}: -> {pair['reason']} at {pair['decided_by'] or 'end'}", "", "", ""])
    print(format_table(["stage per image (ms)", "median", "min", "max"], rows))


def _mmm(figure: Mapping[str, Any]) -> list[Any]:
    return [figure["median"], figure["min"], figure["max"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    if not 1 <= args.reps <= 50:
        parser.error("--reps: 1 to 50")
    # In a fresh process with the workers' native-pool settings (sized when NumPy loads).
    report = run_in_child(worker_defaults(), run, args.reps)
    print_report(report)
    print(f"\nwrote {write_json('models.json', report)}")


if __name__ == "__main__":
    main()
