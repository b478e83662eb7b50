"""`faceval eval detector`: precision and recall of the configured face detector.

Detections (before any framing decision) are matched one-to-one to labelled boxes,
best score first, when their intersection over union reaches `iou`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.analysis import Face, Image
from shared.imaging import decode_rgb
from shared.models_registry import Registry
from shared.onnx import build_session
from shared.settings import Settings
from tools.eval.datasets import Box

Detect = Callable[[Image], list[Face]]


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def match(detections: Sequence[Face], truth: Sequence[Box], threshold: float) -> int:
    """How many detections (best first) match a distinct labelled box."""
    free = list(truth)
    hits = 0
    for face in sorted(detections, key=lambda f: -f.score):
        box = (face.x, face.y, face.width, face.height)
        scored = [(iou(box, t), i) for i, t in enumerate(free)]
        if scored:
            best, index = max(scored)
            if best >= threshold:
                hits += 1
                free.pop(index)
    return hits


@dataclass(frozen=True)
class DetectorMetrics:
    images: int
    labelled: int
    detected: int
    matched: int
    missing_images: int

    @property
    def precision(self) -> float:
        return self.matched / self.detected if self.detected else float("nan")

    @property
    def recall(self) -> float:
        return self.matched / self.labelled if self.labelled else float("nan")


def evaluate_detector(
    folder: Path, labels: Mapping[str, Sequence[Box]], detect: Detect, iou_threshold: float = 0.5
) -> DetectorMetrics:
    labelled = detected = matched = missing = images = 0
    for name, truth in labels.items():
        path = folder / name
        if not path.is_file():
            missing += 1
            continue
        faces = detect(decode_rgb(path.read_bytes()))
        images += 1
        labelled += len(truth)
        detected += len(faces)
        matched += match(faces, truth, iou_threshold)
    return DetectorMetrics(images, labelled, detected, matched, missing)


def build_detect(settings: Settings, max_side: int | None = None) -> tuple[str, Detect]:
    """The detector the face_detector stage would run, without its framing decisions."""
    from services.face_detector.model import detect_faces
    from services.face_detector.scrfd import scrfd_detect

    registry = Registry.from_settings(settings)
    choice = settings.detector_model
    scrfd = registry.optional("scrfd_10g") if choice in ("auto", "scrfd_10g") else None
    if scrfd is not None:
        session = build_session(scrfd, settings)
        return "scrfd_10g", lambda image: scrfd_detect(session, image)
    path = registry.require("retinaface_mobilenet", materialise_from_package=True)
    session = build_session(path, settings)
    side = max_side or settings.detector_max_side
    threshold = settings.detector_score_threshold
    return "retinaface_mobilenet", lambda image: detect_faces(session, image, side, threshold)
