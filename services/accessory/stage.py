"""The accessory stage: sunglasses, clear glasses, face mask and hat from the face crop,
by heuristics and, when installed, an ONNX classifier."""

from __future__ import annotations

from collections.abc import Sequence

from shared.analysis import Model
from shared.models_registry import Registry
from shared.runtime import StageDefinition
from shared.settings import Settings


def build_models(settings: Settings) -> Sequence[Model]:
    from services.accessory.model import AccessoryHeuristics
    from services.slots import onnx_slot

    registry = Registry.from_settings(settings)
    return [
        AccessoryHeuristics(info=registry.info("accessory_heuristics")),
        # A trained classifier, when its verified file is installed; not run otherwise.
        onnx_slot(
            settings,
            registry,
            "accessory_classifier",
            code="accessory_detected",
            reject_above=settings.accessory_model_threshold,
        ),
    ]


STAGE = StageDefinition(name="accessory", build_models=build_models)
