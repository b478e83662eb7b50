"""The accessory stage: sunglasses, clear glasses, face mask and hat from the face crop."""

from __future__ import annotations

from collections.abc import Sequence

from shared.analysis import Model
from shared.runtime import StageDefinition
from shared.settings import Settings


def build_models(settings: Settings) -> Sequence[Model]:
    from services.accessory.model import AccessoryHeuristics

    return [AccessoryHeuristics()]


STAGE = StageDefinition(name="accessory", build_models=build_models)
