"""The quality stage: classic metrics (face and whole image), BRISQUE, NIQE, LIQE, TOPIQ.

BRISQUE's SVM and NIQE's pristine model are materialised from their installed packages
and verified by the registry; the manifest's quality scorer models (LIQE and TOPIQ) run
when their verified ONNX exports are in the model directory and are recorded as not run
otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from shared.analysis import Model
from shared.models_registry import Registry
from shared.runtime import StageDefinition
from shared.settings import Settings


def build_models(settings: Settings) -> Sequence[Model]:
    from services.quality.brisque import Brisque
    from services.quality.model import ClassicMetrics
    from services.quality.niqe import Niqe, Pristine
    from services.slots import stage_slots

    registry = Registry.from_settings(settings)

    def offline(name: str) -> Path:
        return registry.require(name, materialise_from_package=True)

    return [
        ClassicMetrics.judging(
            registry.limits("classic_metrics", settings), info=registry.info("classic_metrics")
        ),
        ClassicMetrics.whole_image(info=registry.info("classic_metrics_image")),
        Brisque.from_files(
            offline("brisque"),
            offline("brisque_range"),
            max_score=registry.limits("brisque", settings)["max_score"],
            info=registry.info("brisque"),
        ),
        Niqe(
            Pristine.load(offline("niqe")),
            max_score=registry.limits("niqe", settings)["max_score"],
            info=registry.info("niqe"),
        ),
        *stage_slots(settings, registry, "quality"),
    ]


#: The classic metrics, BRISQUE and NIQE are NumPy code of many small operations that hold
#: the GIL much of the time (measured on a quiet machine: two threads 12.2 ms per image
#: against 16.1 one at a time, 8.0 ideal), so near and far run in two child processes.
STAGE = StageDefinition(name="quality", build_models=build_models, holds_gil=True)
