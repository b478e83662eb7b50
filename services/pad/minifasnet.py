"""MiniFASNet presentation-attack detection: two crops, two networks, fused as upstream does.

Minivision's Silent-Face-Anti-Spoofing runs MiniFASNetV2 on the face box enlarged 2.7x
and MiniFASNetV1SE on it enlarged 4.0x (more background: the edges of a phone or a
sheet of paper), each resized to 80x80, BGR, float 0-255, NCHW. Each gives a softmax over
three classes (index 1 = real face; 0 and 2 = attacks); upstream adds the two softmax
vectors and takes class 1's share, so `live` = mean of the two real-face probabilities
and `spoof` = 1 - `live`. The image is rejected when `spoof` reaches the threshold.

The crop follows upstream's CropImage exactly (src/generate_patches.py): the scale is
lowered until the enlarged box fits the image, the box is shifted (not clipped) back
inside the image, and the corners are truncated to integers.

Context: the networks judge the face together with what surrounds it (paper edges, a
bezel, moire on the background). When the image is a tight crop of the face there is
nothing around it and the output is close to a coin toss on genuine photos (median
spoof 0.51 on 199 tight web crops, 0.01 on LFW photos: docs/models.md). `context` is how
many face boxes fit in the image (the scale upstream's crop falls back to); below
`min_context` the image is recorded as not assessed (`assessed` 0, no rejection) and
the stage's result must not be described as a live face.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from shared.analysis import Face, Image, ModelInfo, ModelResult, Rejection

FloatArray = NDArray[np.float32]
INPUT_SIZE = 80
#: Upstream's class index of a real face.
LIVE_INDEX = 1

Box = tuple[int, int, int, int]


def crop_box(image_w: int, image_h: int, face: Face, scale: float) -> Box:
    """Upstream's crop (left, top, right, bottom; inclusive) for `face` enlarged `scale` times."""
    box_w, box_h = max(face.width, 1.0), max(face.height, 1.0)
    scale = min((image_h - 1) / box_h, (image_w - 1) / box_w, scale)
    new_w, new_h = box_w * scale, box_h * scale
    cx, cy = face.x + box_w / 2, face.y + box_h / 2
    left, top = cx - new_w / 2, cy - new_h / 2
    right, bottom = cx + new_w / 2, cy + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > image_w - 1:
        left -= right - image_w + 1
        right = image_w - 1
    if bottom > image_h - 1:
        top -= bottom - image_h + 1
        bottom = image_h - 1
    return int(left), int(top), int(right), int(bottom)


def context_of(image_w: int, image_h: int, face: Face) -> float:
    """How many times the face box fits in the image: the largest scale a crop can use."""
    return min((image_h - 1) / max(face.height, 1.0), (image_w - 1) / max(face.width, 1.0))


def crop_input(image: Image, face: Face, scale: float) -> FloatArray:
    """The network input: the crop resized to 80x80 (bilinear), BGR, float 0-255, 1x3x80x80."""
    height, width = image.shape[:2]
    left, top, right, bottom = crop_box(width, height, face, scale)
    region = image[max(top, 0) : bottom + 1, max(left, 0) : right + 1]
    resized = cv2.resize(region, (INPUT_SIZE, INPUT_SIZE))
    bgr = np.asarray(resized, dtype=np.float32)[:, :, ::-1]
    return np.ascontiguousarray(bgr.transpose(2, 0, 1)[None])


def softmax(logits: NDArray[np.floating]) -> NDArray[np.float64]:
    values = np.asarray(logits, dtype=np.float64).reshape(-1)
    shifted = np.exp(values - values.max())
    return np.asarray(shifted / shifted.sum(), dtype=np.float64)


def fuse(probabilities: Sequence[NDArray[np.float64]]) -> float:
    """Upstream's fusion: class 1 of the summed softmax vectors, divided by their count."""
    return float(np.sum(probabilities, axis=0)[LIVE_INDEX] / len(probabilities))


@dataclass(frozen=True)
class CropModel:
    """One of the two networks: its manifest name (score prefix), crop scale and session."""

    name: str
    scale: float
    session: ort.InferenceSession
    info: ModelInfo

    def probabilities(self, image: Image, face: Face) -> NDArray[np.float64]:
        tensor = crop_input(image, face, self.scale)
        input_name = self.session.get_inputs()[0].name
        return softmax(self.session.run(None, {input_name: tensor})[0])


@dataclass
class MiniFASNet:
    """Both MiniFASNet crops fused; rejects (`spoof_detected`) at `threshold` spoof.

    Scores: `live` and `spoof` (fused), `prob` (= `spoof`, the name every PAD model's spoof
    probability is stored under), `<model>_live` per network, `context` and `assessed`
    (1 when `context` >= `min_context`: only then can the image be rejected, and only then
    has liveness been judged).
    """

    models: Sequence[CropModel]
    threshold: float
    info: ModelInfo
    min_context: float = 1.5
    key: str = field(default="minifasnet", init=False)

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        if face is None:
            raise ValueError("MiniFASNet needs the detected face")
        per_model = [m.probabilities(image, face) for m in self.models]
        live = fuse(per_model)
        spoof = 1.0 - live
        context = context_of(image.shape[1], image.shape[0], face)
        assessed = context >= self.min_context
        scores = {"live": live, "spoof": spoof, "prob": spoof}
        for model, probs in zip(self.models, per_model, strict=True):
            scores[f"{model.name}_live"] = float(probs[LIVE_INDEX])
        scores["context"] = context
        scores["assessed"] = 1.0 if assessed else 0.0
        rejections: tuple[Rejection, ...] = ()
        if assessed and spoof >= self.threshold:
            rejections = (
                Rejection(
                    "spoof_detected",
                    f"The face looks like a presentation attack (MiniFASNet spoof score "
                    f"{spoof:.3f}, threshold {self.threshold:g}).",
                    subject="minifasnet",
                ),
            )
        details: dict[str, object] = {"models": {m.name: m.info.version for m in self.models}}
        if not assessed:
            details["not_assessed"] = (
                f"the face fills the image (it fits {context:.2f} times, MiniFASNet needs "
                f"{self.min_context:g}): too little surround to judge liveness"
            )
        return ModelResult(scores=scores, rejections=rejections, details=details)
