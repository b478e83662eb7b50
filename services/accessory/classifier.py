"""The trained accessory classifier: face mask, sunglasses, clear glasses, hat.

The face is warped by a similarity transform (least squares on the detector's five
landmarks) into an 80x96 canonical frame that keeps the forehead (for hats) and the chin
(for masks); a small CNN (`tools/train/accessory.py`, card in docs/models.md) returns one
calibrated probability per accessory. Each accessory at or above its threshold is a
rejection whose code and subject are the accessory's name; the transaction's policy
(`shared.pipeline.Policy`, per client) turns the ones it reports only (by default clear
glasses) into notes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from shared.analysis import Face, Image, ModelInfo, ModelResult, Rejection

#: The accessories the network scores, in its output order.
LABELS: tuple[str, ...] = ("face_mask", "sunglasses", "glasses", "hat")
#: Canvas (width, height) and where the five landmarks go in it: the ArcFace template at an
#: inter-ocular distance of 20 px, eyes 46 px from the top (room for a hat), chin ~35 px
#: below the eyes.
CANVAS = (80, 96)
TEMPLATE = np.array(
    [[30.0, 46.0], [50.0, 46.0], [40.05, 57.45], [31.85, 69.15], [48.15, 69.05]],
    dtype=np.float64,
)
_NAMES = {
    "face_mask": "A face mask",
    "sunglasses": "Sunglasses",
    "glasses": "Glasses",
    "hat": "A hat covering the brows",
}


def similarity(src: NDArray[np.float64], dst: NDArray[np.float64]) -> NDArray[np.float64]:
    """The 2x3 least-squares similarity transform (Umeyama, no reflection) src -> dst."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - mu_s, dst - mu_d
    var = float((s**2).sum()) / len(src)
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1.0
    rot = u @ np.diag(sign) @ vt
    scale = float((sig * sign).sum()) / max(var, 1e-12)
    shift = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, shift[:, None]])


def align(image: Image, landmarks: Sequence[Sequence[float]] | NDArray[np.float64]) -> Image:
    """The face in the canonical frame, RGB uint8 96x80 (border pixels replicated)."""
    src = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    matrix = similarity(src, TEMPLATE)
    scale = float(np.hypot(*matrix[:, 0]))
    # Shrinking a large face: blur first so the warp does not alias (INTER_AREA does not
    # apply to warpAffine). Only the part of the image the canvas samples is blurred
    # (plus the kernel's reach), so a large photo costs no more than a small one.
    if scale < 0.5:
        sigma = 0.4 / scale
        width, height = CANVAS
        corners = np.array([[0, 0], [width, 0], [0, height], [width, height]], np.float64)
        inverse = cv2.invertAffineTransform(matrix)
        reach = corners @ inverse[:, :2].T + inverse[:, 2]
        pad = int(np.ceil(4 * sigma)) + 2
        x0, y0 = np.maximum(np.floor(reach.min(axis=0)).astype(int) - pad, 0)
        x1, y1 = np.ceil(reach.max(axis=0)).astype(int) + pad
        part = image[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]
        image = np.asarray(cv2.GaussianBlur(part, (0, 0), sigma), dtype=np.uint8)
        matrix = matrix.copy()
        matrix[:, 2] += matrix[:, :2] @ np.array([x0, y0], np.float64)
    warped = cv2.warpAffine(
        image, matrix, CANVAS, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return np.ascontiguousarray(warped, dtype=np.uint8)


def to_tensor(faces: Image) -> NDArray[np.float32]:
    """NCHW float32 in about [-2, 2]: (x / 255 - 0.5) / 0.25, from N x 96 x 80 x 3 uint8."""
    x = (faces.astype(np.float32) / np.float32(255.0) - np.float32(0.5)) / np.float32(0.25)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass
class AccessoryClassifier:
    """The accessory stage's decider: calibrated probabilities, per-accessory thresholds.

    Every accessory found is a rejection; which of them only report is the transaction
    policy's call (`FACEVAL_REPORT_ONLY_REASONS`, default glasses; a client may differ).
    """

    session: ort.InferenceSession
    thresholds: Mapping[str, float]
    key: str = field(default="accessory_classifier", init=False)
    info: ModelInfo = field(default=ModelInfo(name="accessory_classifier", version="1"))

    def __post_init__(self) -> None:
        missing = set(LABELS) - set(self.thresholds)
        if missing:
            raise ValueError(f"no threshold for {sorted(missing)}")
        self._input = self.session.get_inputs()[0].name

    def probabilities(self, image: Image, face: Face) -> dict[str, float]:
        tensor = to_tensor(align(image, face.landmarks)[None])
        raw = np.asarray(self.session.run(None, {self._input: tensor})[0], np.float64)
        return {n: float(v) for n, v in zip(LABELS, raw.reshape(-1), strict=True)}

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        if face is None or len(face.landmarks) != 5:
            raise ValueError("the accessory classifier needs a detected face with five landmarks")
        scores = self.probabilities(image, face)
        found = [n for n in LABELS if scores[n] >= self.thresholds[n]]
        rejections = tuple(
            Rejection(
                n,
                f"{_NAMES[n]} detected on the face (probability {scores[n]:.2f}, "
                f"threshold {self.thresholds[n]:.2f}).",
                subject=n,
            )
            for n in found
        )
        details = {"thresholds": {n: round(self.thresholds[n], 4) for n in LABELS}}
        return ModelResult(scores=scores, rejections=rejections, details=details)
