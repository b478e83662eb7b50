"""A FaceVal stage worker whose only model does nothing: the pipeline's own cost, alone.

    python -m bench.noop_worker face_detector|accessory|quality|pad

It is the production worker (`shared.worker.run_worker`: Celery, the stage runtime, MongoDB
records, Redis image fetch and decode, decisions, publishing) with the stage's models
replaced by one that returns at once. It lives in bench/ and is started only by the
benchmarks, so no production setting can turn a real worker into a no-op one.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.analysis import Face, Image, Model, ModelInfo, ModelResult
from shared.pipeline import STAGES, StageName
from shared.runtime import StageDefinition
from shared.settings import Settings
from shared.worker import run_worker


@dataclass(frozen=True)
class NoopModel:
    """Passes every image without looking at it."""

    key: str = "noop"
    info: ModelInfo = field(default=ModelInfo(name="noop", version="0"))

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        return ModelResult(scores={})


def _noop_models(_: Settings) -> Sequence[Model]:
    return [NoopModel()]


def noop_stage(stage: StageName) -> StageDefinition:
    # No face is ever found, so no stage may require one.
    return StageDefinition(name=stage, build_models=_noop_models, needs_face=False)


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in STAGES:
        raise SystemExit(f"usage: python -m bench.noop_worker {{{'|'.join(STAGES)}}}")
    stage = next(s for s in STAGES if s == argv[0])
    run_worker(noop_stage(stage))


if __name__ == "__main__":
    main(sys.argv[1:])
