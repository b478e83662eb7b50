"""Per-stage model cost (item 4) and the in-process baseline the pipeline is compared with.

`InProcessPipeline` runs the production stages' own models (each stage's
`build_models(settings)`) through `shared.runtime.analyze_image`, in one process and one
thread, near then far, stage after stage, deciding each stage with the production rule
(`transactions.stage_decision` plus the stage's pair check) and stopping at the first
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
import importlib
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.harness import run_in_child, worker_defaults
from bench.pairs import BenchPair, bench_pairs
from bench.stats import format_table, machine, spread, write_json
from shared import transactions
from shared.analysis import IMAGE_SIDES, Face, Model
from shared.imaging import decode_rgb
from shared.pipeline import STAGES, StageName
from shared.runtime import StageDefinition, analyze_image
from shared.settings import Settings, get_settings


def stage_definition(stage: StageName) -> StageDefinition:
    module = importlib.import_module(f"services.{stage}.stage")
    definition = module.STAGE
    assert isinstance(definition, StageDefinition)
    return definition


@dataclass
class PairRun:
    """One pair through the in-process pipeline."""

    reason: str
    decided_by: str | None
    wall_s: float
    decode_s: float
    #: stage -> side -> seconds of the stage's models (analyze_image's own timings).
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
    """All four stages' models in this process; `validate` is one pair, sequentially."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.stages: list[tuple[StageDefinition, Sequence[Model]]] = []
        self.load_s: dict[str, float] = {}
        for stage in STAGES:
            definition = stage_definition(stage)
            started = time.perf_counter()
            models = definition.build_models(self.settings)
            self.load_s[stage] = time.perf_counter() - started
            self.stages.append((definition, models))

    def validate(self, near: bytes, far: bytes) -> PairRun:
        started = time.perf_counter()
        images = {"near": decode_rgb(near), "far": decode_rgb(far)}
        decode_s = time.perf_counter() - started
        faces: dict[str, Face | None] = {side: None for side in IMAGE_SIDES}
        run = PairRun(reason="accepted", decided_by=None, wall_s=0.0, decode_s=decode_s)
        for definition, models in self.stages:
            stage = definition.name
            records: dict[str, dict[str, Any]] = {}
            run.stage_s[stage] = {}
            run.model_s[stage] = {}
            for side in IMAGE_SIDES:
                t0 = time.perf_counter()
                if definition.needs_face and faces[side] is None:
                    verdict, reasons, scores = "error", [{"code": "missing_face"}], {}
                    times: dict[str, float] = {}
                else:
                    verdict, scores, reasons, face, times = analyze_image(
                        models, images[side], faces[side]
                    )
                    if stage == "face_detector":
                        faces[side] = face
                run.stage_s[stage][side] = time.perf_counter() - t0
                run.model_s[stage][side] = dict(times)
                records[side] = {"verdict": verdict, "reasons": reasons, "scores": scores}
            decision = self._decide(definition, records, faces)
            if decision["outcome"] != "pass":
                run.reason = transactions.summary_of(decision).reason
                run.decided_by = stage
                break
        run.wall_s = time.perf_counter() - started
        return run

    @staticmethod
    def _decide(
        definition: StageDefinition,
        records: Mapping[str, Mapping[str, Any]],
        faces: Mapping[str, Face | None],
    ) -> dict[str, Any]:
        # The production rule (shared/runtime.py StageRuntime._decide), without the database.
        decision = transactions.stage_decision(definition.name, records)
        if definition.pair_check is None or decision["outcome"] != "pass":
            return decision
        with_faces = {
            side: {**records[side], "face": f.to_dict() if (f := faces[side]) else None}
            for side in IMAGE_SIDES
        }
        pair = definition.pair_check(with_faces["near"], with_faces["far"])
        reasons = [r.to_dict() for r in pair.rejections]
        return {"outcome": "reject" if reasons else "pass", "reasons": reasons}


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
