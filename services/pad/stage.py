"""The pad stage: presentation-attack heuristics, plus the production PAD model slots."""

from __future__ import annotations

from collections.abc import Sequence

from shared.analysis import Model, ModelInfo, UnavailableModel
from shared.runtime import StageDefinition
from shared.settings import Settings

#: Production PAD models whose scores the analysts' data names; none ships in a package.
PRODUCTION_SLOTS = ("as_35_selfies", "ibeta2_crops", "ibeta2_full", "ibeta2_clip")


def build_models(settings: Settings) -> Sequence[Model]:
    from services.pad.model import PadHeuristics

    slots: list[Model] = [
        UnavailableModel(key, ModelInfo(key, "none"), f"no {key} model installed")
        for key in PRODUCTION_SLOTS
    ]
    return [PadHeuristics(), *slots]


STAGE = StageDefinition(name="pad", build_models=build_models)
