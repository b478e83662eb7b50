"""The pad stage: heuristics, the production PAD model slots, and the near/far geometry.

Per image: the presentation-attack heuristics, the four production ONNX slots (run when
their verified files are in the model directory, recorded as not run otherwise), and the
face geometry the pair check needs. Across the pair: near/far consistency and the fused
spoof probability (services/pad/geometry.py), report-only unless FACEVAL_PAD_PAIR_REJECT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.pad.geometry import NearFarConsistency
from shared.analysis import Model, PairResult
from shared.models_registry import Registry
from shared.runtime import StageDefinition
from shared.settings import Settings, get_settings

#: Production PAD models whose scores the analysts' data names.
PRODUCTION_SLOTS = ("as_35_selfies", "ibeta2_crops", "ibeta2_full", "ibeta2_clip")


def build_models(settings: Settings) -> Sequence[Model]:
    from services.pad.geometry import FaceGeometry
    from services.pad.model import PadHeuristics
    from services.slots import onnx_slot

    registry = Registry.from_settings(settings)
    slots = [
        onnx_slot(
            settings,
            registry,
            key,
            value_name="prob",
            code="spoof_detected",
            reject_above=settings.pad_model_threshold,
        )
        for key in PRODUCTION_SLOTS
    ]
    return [
        PadHeuristics(
            threshold=settings.pad_heuristics_threshold, info=registry.info("pad_heuristics")
        ),
        *slots,
        FaceGeometry(info=registry.info("pad_geometry")),
    ]


def pair_check(near: Mapping[str, Any], far: Mapping[str, Any]) -> PairResult:
    # Settings are read per call (cached), not at import, so the environment decides.
    settings = get_settings()
    check = NearFarConsistency(settings.pad_fused_threshold, settings.pad_pair_reject)
    return check(near, far)


STAGE = StageDefinition(name="pad", build_models=build_models, pair_check=pair_check)
