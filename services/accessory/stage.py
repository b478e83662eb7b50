"""The accessory stage: a trained classifier decides (face mask, sunglasses, clear glasses,
hat over the brows); the hand-made heuristics still run and are recorded, never decide.

Which accessories reject is the transaction policy's (`shared.pipeline.Policy`): by
default masks, sunglasses and hats reject and clear glasses are reported
(`FACEVAL_REPORT_ONLY_REASONS`); a client's record may report or reject others."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared.analysis import Face, Image, Model, ModelInfo, ModelResult
from shared.models_registry import Registry
from shared.onnx import build_session
from shared.pipeline import StageDefinition
from shared.settings import Settings


@dataclass(frozen=True)
class ReportOnly:
    """A model whose scores are kept but whose rejections become details only."""

    model: Model

    @property
    def key(self) -> str:
        return self.model.key

    @property
    def info(self) -> ModelInfo:
        return self.model.info

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        result = self.model.analyze(image, face)
        details = dict(result.details)
        details["would_reject"] = [r.subject or r.code for r in result.rejections]
        return ModelResult(scores=result.scores, face=result.face, details=details)


def build_models(settings: Settings) -> Sequence[Model]:
    from services.accessory.classifier import AccessoryClassifier
    from services.accessory.model import AccessoryHeuristics

    registry = Registry.from_settings(settings)
    entry = registry.entry("accessory_classifier")
    # The weights are committed with the code: copied into the model directory and
    # verified on first use, like a package's.
    path = registry.require("accessory_classifier", materialise_from_package=True)
    return [
        AccessoryClassifier(
            session=build_session(path, settings),
            thresholds={
                label: limit
                for label, limit in registry.limits("accessory_classifier", settings).items()
                if limit is not None
            },
            info=entry.info,
        ),
        ReportOnly(AccessoryHeuristics(info=registry.info("accessory_detector"))),
    ]


STAGE = StageDefinition(name="accessory", build_models=build_models)
