"""Near/far geometric consistency: a real face is 3-D, a photo or a screen is flat.

Perspective magnifies what is close to the camera more than what is far. On a real head
the eyes lie about `EYE_DEPTH_MM` behind the nose tip and the face outline at eye
height (the cheek contour the detector's box follows) about `OUTLINE_DEPTH_MM` behind
it, so the inter-ocular distance (IOD) grows relative to the face width as the camera
comes closer. At camera distance d (to the nose tip) the observed ratio is

    IOD / width = k * (d + OUTLINE_DEPTH_MM) / (d + EYE_DEPTH_MM)

for a person-specific k that cancels between the near and the far capture. A flat photo
or screen has every point at one depth: the ratio does not change at all.

Per image, `FaceGeometry` records the ratio and an estimate of the camera distance from
the IOD in pixels (an assumed 62 mm IOD and a 70-degree horizontal field of view, a
typical phone front camera). The pair check then compares the change it observes with
the change a real face would show at those distances: `flatness` 1 means no change at
all (flat), 0 the full expected change (3-D). With little difference in distance there
is nothing to measure and the pair is scored as uninformative.

Limits, and why this is report-only by default: the constants are anthropometric
averages and the field of view is assumed; the detector's box width is a learned
boundary, not a measured contour, and its noise (about 2-3 % between scales on the
bundled images) is a sizeable part of the 5-10 % effect; a yaw change between the two
captures alters the ratio too (pairs turning more than `MAX_YAW_CHANGE` are scored as
uninformative). It was checked only on synthetic projections of a 3-D landmark model
(which it separates) and on the bundled sample pairs, which are crops of one photograph
and therefore flat (which it flags). No real near/far captures of real faces and of
attacks were available to show that it separates them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.analysis import Face, Image, ModelInfo, ModelResult, PairResult, Rejection

EYE_DEPTH_MM = 30.0
OUTLINE_DEPTH_MM = 80.0
IOD_MM = 62.0
HORIZONTAL_FOV_DEGREES = 70.0
#: Expected ratio changes below this are within the detector's noise: uninformative.
MIN_EXPECTED_CHANGE = 0.03
MAX_YAW_CHANGE = 15.0
#: Fusion: logit(fused) = logit(p_image) + GEOMETRY_WEIGHT * (flatness - 0.5), where
#: p_image is the highest per-image spoof probability of the pair. A flat, informative
#: pair adds 1 to the logit (0.30 becomes 0.54), a clearly 3-D one removes 1.
GEOMETRY_WEIGHT = 2.0
#: Per-image probabilities fused when none are given: MiniFASNet's (the stage passes the
#: manifest's list: services/pad/stage.py, fused_models).
FUSED_DEFAULT = ("minifasnet",)
_EPS = 1e-6


def iod(face: Face) -> float:
    (lx, ly), (rx, ry) = face.landmarks[0], face.landmarks[1]
    return math.hypot(rx - lx, ry - ly)


def distance_mm(face: Face, image_width: int, fov_degrees: float = HORIZONTAL_FOV_DEGREES) -> float:
    """Camera-to-face distance from the IOD in pixels, for an assumed field of view."""
    focal_px = image_width / (2.0 * math.tan(math.radians(fov_degrees) / 2.0))
    return focal_px * IOD_MM / max(iod(face), _EPS)


def expected_ratio(distance: float) -> float:
    """IOD / width of a real face at `distance` mm, up to the person's constant."""
    return (distance + OUTLINE_DEPTH_MM) / (distance + EYE_DEPTH_MM)


@dataclass
class FaceGeometry:
    """Per-image measurements the pair check compares (recorded, never rejects)."""

    key: str = "pad_geometry"
    info: ModelInfo = field(default=ModelInfo(name="pad_geometry", version="1.0"))

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        if face is None or len(face.landmarks) != 5:
            raise ValueError("face geometry needs a detected face with five landmarks")
        width = image.shape[1]
        scores = {
            "iod_ratio": iod(face) / max(face.width, _EPS),
            "mouth_ratio": math.dist(face.landmarks[3], face.landmarks[4]) / max(face.width, _EPS),
            "face_width_ratio": face.width / width,
            "distance_mm": distance_mm(face, width),
        }
        if face.pose is not None:
            scores["yaw"] = face.pose[0]
        return ModelResult(scores=scores)


def _values(record: Mapping[str, Any], key: str) -> Mapping[str, float] | None:
    entry = (record.get("scores") or {}).get(key) or {}
    if entry.get("status") != "ok":
        return None
    values: Mapping[str, float] = entry.get("values") or {}
    return values


def image_spoof_probability(
    record: Mapping[str, Any], models: Sequence[str] = FUSED_DEFAULT
) -> float | None:
    """The highest spoof probability any of `models` gave this image (None if none ran).

    A model that ran but says it could not judge the image (`assessed` 0, MiniFASNet on a
    tight face crop) does not count.
    """
    probs = [
        v["prob"]
        for key in models
        if (v := _values(record, key)) and "prob" in v and v.get("assessed", 1.0) != 0.0
    ]
    return max(probs) if probs else None


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def geometry_scores(near: Mapping[str, float], far: Mapping[str, float]) -> dict[str, float]:
    observed = near["iod_ratio"] / far["iod_ratio"] - 1.0
    expected = expected_ratio(near["distance_mm"]) / expected_ratio(far["distance_mm"]) - 1.0
    yaw_change = abs(near.get("yaw", 0.0) - far.get("yaw", 0.0))
    informative = expected >= MIN_EXPECTED_CHANGE and yaw_change <= MAX_YAW_CHANGE
    flatness = float(np.clip(1.0 - observed / expected, 0.0, 1.0)) if informative else 0.5
    return {
        "observed_change": observed,
        "expected_change": expected,
        "distance_ratio": far["distance_mm"] / max(near["distance_mm"], _EPS),
        "yaw_change": yaw_change,
        "informative": 1.0 if informative else 0.0,
        "flatness": flatness,
    }


@dataclass(frozen=True)
class NearFarConsistency:
    """The pad stage's pair check: geometry scores and the fused spoof probability.

    Rejects (`spoof_detected`, subject "near_far_geometry") only when `reject` is set
    and the fused probability reaches `threshold`; otherwise it records and passes.
    """

    threshold: float = 0.5
    reject: bool = False
    #: The per-image probabilities fused (manifest names).
    models: Sequence[str] = FUSED_DEFAULT

    def __call__(self, near: Mapping[str, Any], far: Mapping[str, Any]) -> PairResult:
        near_geo, far_geo = _values(near, "pad_geometry"), _values(far, "pad_geometry")
        if near_geo is None or far_geo is None:
            return PairResult(scores={})
        scores = {f"geometry_{k}": v for k, v in geometry_scores(near_geo, far_geo).items()}
        probs = [
            p
            for p in (
                image_spoof_probability(near, self.models),
                image_spoof_probability(far, self.models),
            )
            if p is not None
        ]
        image_prob = max(probs) if probs else 0.5
        logit = _logit(image_prob) + GEOMETRY_WEIGHT * (scores["geometry_flatness"] - 0.5)
        fused = 1.0 / (1.0 + math.exp(-logit))
        scores["image_prob"] = image_prob
        scores["fused_prob"] = fused
        rejections: tuple[Rejection, ...] = ()
        if self.reject and fused >= self.threshold:
            rejections = (
                Rejection(
                    "spoof_detected",
                    f"Near and far images together look like a flat reproduction (fused "
                    f"score {fused:.2f}, threshold {self.threshold:.2f}; flatness "
                    f"{scores['geometry_flatness']:.2f}).",
                    subject="near_far_geometry",
                ),
            )
        return PairResult(scores=scores, rejections=rejections)
