"""SCRFD (insightface) face detection with five keypoints, for the production model slot.

The network (e.g. `det_10g.onnx` from insightface's buffalo_l pack, licensed for
non-commercial research only) takes a 640x640 RGB input, (x - 127.5) / 128, with the
image resized to fit and padded at the bottom and right. For each of its three strides
(8, 16, 32) it emits, per cell and for two anchors, a face score, four box distances
(left, top, right, bottom) and five keypoint offsets, all in stride units from the
anchor centre. Outputs come grouped: the three score maps, then the boxes, then the
keypoints; a batch axis in front is tolerated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from services.face_detector.framing import FramingPolicy
from shared.analysis import Face, Image, ModelInfo, ModelResult

FloatArray = NDArray[np.float32]

_STRIDES = (8, 16, 32)
_ANCHORS_PER_CELL = 2


@lru_cache(maxsize=8)
def _centres(height: int, width: int, stride: int) -> FloatArray:
    """Anchor centres (x, y) in input pixels, two per cell, in the network's order."""
    rows, cols = height // stride, width // stride
    yy, xx = np.mgrid[:rows, :cols]
    centres = np.stack([xx, yy], axis=-1).reshape(-1, 2).astype(np.float32) * stride
    centres = np.repeat(centres, _ANCHORS_PER_CELL, axis=0)
    centres.setflags(write=False)
    return centres


def _prepare(image: Image, size: tuple[int, int]) -> tuple[FloatArray, float]:
    width, height = size
    scale = min(width / image.shape[1], height / image.shape[0])
    new_w, new_h = max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))
    canvas = np.zeros((height, width, 3), dtype=np.float32)
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    canvas[:new_h, :new_w] = cv2.resize(image, (new_w, new_h), interpolation=interp)
    # Padding is black in the original pipeline, i.e. (0 - 127.5) / 128 after scaling.
    tensor = (canvas - 127.5) / 128.0
    return tensor.transpose(2, 0, 1)[None].astype(np.float32), scale


def scrfd_detect(
    session: ort.InferenceSession,
    image: Image,
    size: tuple[int, int] = (640, 640),
    score_threshold: float = 0.5,
    nms_threshold: float = 0.4,
) -> list[Face]:
    """All faces above `score_threshold`, best first, in full-image coordinates."""
    tensor, scale = _prepare(image, size)
    name = session.get_inputs()[0].name
    outputs = [np.asarray(o, dtype=np.float32) for o in session.run(None, {name: tensor})]
    levels = len(_STRIDES)
    if len(outputs) != 3 * levels:
        raise ValueError(f"SCRFD with keypoints has 9 outputs, this model has {len(outputs)}")
    boxes, scores, points = [], [], []
    for i, stride in enumerate(_STRIDES):
        score = outputs[i].reshape(-1)
        dist = outputs[i + levels].reshape(-1, 4) * stride
        kps = outputs[i + 2 * levels].reshape(-1, 5, 2) * stride
        centres = _centres(size[1], size[0], stride)
        if score.shape[0] != centres.shape[0]:
            raise ValueError(f"stride {stride}: {score.shape[0]} scores for {len(centres)} anchors")
        keep = np.flatnonzero(score >= score_threshold)
        c = centres[keep]
        x0y0 = c - dist[keep, :2]
        x1y1 = c + dist[keep, 2:]
        boxes.append(np.hstack([x0y0, x1y1 - x0y0]))
        scores.append(score[keep])
        points.append(c[:, None, :] + kps[keep])
    all_boxes = np.vstack(boxes) / scale
    all_scores = np.concatenate(scores)
    all_points = np.vstack(points) / scale
    if all_scores.size == 0:
        return []
    chosen = cv2.dnn.NMSBoxes(
        all_boxes.tolist(), all_scores.tolist(), score_threshold, nms_threshold
    )
    order = np.asarray(chosen, dtype=np.int64).reshape(-1)
    order = order[np.argsort(-all_scores[order], kind="stable")]
    return [
        Face(
            x=float(all_boxes[i, 0]),
            y=float(all_boxes[i, 1]),
            width=float(all_boxes[i, 2]),
            height=float(all_boxes[i, 3]),
            score=float(all_scores[i]),
            landmarks=tuple((float(x), float(y)) for x, y in all_points[i].tolist()),
        )
        for i in order
    ]


@dataclass
class ScrfdDetector:
    """SCRFD detections judged by the same `FramingPolicy` as RetinaFace."""

    session: ort.InferenceSession
    policy: FramingPolicy = field(default_factory=FramingPolicy)
    size: tuple[int, int] = (640, 640)
    score_threshold: float = 0.5
    nms_threshold: float = 0.4
    key: str = field(default="face_detector", init=False)
    info: ModelInfo = field(default=ModelInfo(name="scrfd_10g", version="buffalo_l-det_10g"))

    def analyze(self, image: Image, face: Face | None = None) -> ModelResult:
        del face
        faces = scrfd_detect(
            self.session, image, self.size, self.score_threshold, self.nms_threshold
        )
        return self.policy.judge(faces, image.shape[1], image.shape[0])
