"""The quality stage: the six classic metrics, plus LIQE and TOPIQ when their exports exist."""

from __future__ import annotations

from collections.abc import Sequence

from shared.analysis import Model, ModelInfo, UnavailableModel
from shared.runtime import StageDefinition
from shared.settings import Settings


def build_models(settings: Settings) -> Sequence[Model]:
    from services.quality.model import ClassicMetrics

    return [
        ClassicMetrics(),
        # No package ships LIQE or TOPIQ weights: recorded as not run, never scored.
        UnavailableModel("liqe", ModelInfo("liqe", "none"), "no LIQE ONNX export installed"),
        UnavailableModel("topiq", ModelInfo("topiq", "none"), "no TOPIQ ONNX export installed"),
    ]


STAGE = StageDefinition(name="quality", build_models=build_models)
