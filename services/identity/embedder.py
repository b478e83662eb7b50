"""Face templates with dlib's ResNet descriptor (128-d), aligned from the detector's 5 points.

dlib's network was trained on 150x150 chips that its own `get_face_chip` cuts with
padding 0.25 around a mean face shape; it is only as good as the chip matches that
frame. Two ways to get there from RetinaFace's five points (eye centres, nose tip, mouth
corners) are offered, measured on LFW in docs/models.md:

- "template5" (default): a least-squares similarity from the five points to the same
  five points of dlib's own mean face shape (the one `get_face_chip_details` uses for
  68 landmarks: eye centres as the mean of the six eye points, nose tip 30, mouth
  corners 48 and 54), in the 150 px chip with padding 0.25. Sub-pixel, and the mouth
  corners fix the vertical scale.
- "dlib5": dlib's `get_face_chip` with a 5-part `full_object_detection`, each eye centre
  standing for both of that eye's corners and the nose tip for the base of the nose
  (dlib's 5-point predictor marks the base, so the face comes out slightly stretched),
  points rounded to whole pixels (dlib's Python `point` is integer).

The descriptor of the horizontally mirrored chip is optionally averaged in (a mirrored
face is the same person; the average cancels some pose and lighting asymmetry). The
result is L2-normalised, so the cosine of two templates is their dot product.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from shared.analysis import Embedding, Face, Image, ModelInfo, ModelResult

Alignment = Literal["template5", "dlib5"]
ALIGNMENTS: tuple[Alignment, ...] = ("template5", "dlib5")
CHIP_SIZE = 150
CHIP_PADDING = 0.25
DIMENSIONS = 128

#: dlib's mean face (`get_face_chip_details`, unit square) at the five RetinaFace points,
#: image-left first: eye centres (mean of points 36-41 and 42-47), nose tip (30), mouth
#: corners (48, 54).
_MEAN_FACE_5 = np.array(
    [
        [0.2254919, 0.2159903],
        [0.7547615, 0.2159903],
        [0.4901270, 0.5156250],
        [0.2541490, 0.7802330],
        [0.7261040, 0.7802330],
    ]
)
TEMPLATE_5 = (CHIP_PADDING + _MEAN_FACE_5) / (2 * CHIP_PADDING + 1) * CHIP_SIZE


def similarity_transform(source: NDArray[np.float64], target: NDArray[np.float64]) -> Any:
    """The 2x3 least-squares similarity (Umeyama, no reflection) taking source to target."""
    src_mean, dst_mean = source.mean(axis=0), target.mean(axis=0)
    src, dst = source - src_mean, target - dst_mean
    u, singular, vt = np.linalg.svd(dst.T @ src / len(source))
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = float(singular @ sign) / float((src**2).sum() / len(source))
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def _checked_landmarks(face: Face | None) -> NDArray[np.float64]:
    if face is None or len(face.landmarks) != 5:
        raise ValueError("the face embedding needs a detected face with five landmarks")
    return np.asarray(face.landmarks, dtype=np.float64)


def align_template5(image: Image, face: Face | None) -> Image:
    points = _checked_landmarks(face)
    matrix = similarity_transform(points, TEMPLATE_5)
    chip = cv2.warpAffine(
        image, matrix, (CHIP_SIZE, CHIP_SIZE), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0)
    )
    return np.ascontiguousarray(chip, dtype=np.uint8)


def align_dlib5(image: Image, face: Face | None) -> Image:
    import dlib

    points = _checked_landmarks(face)
    assert face is not None
    left_eye, right_eye, nose = (dlib.point(round(x), round(y)) for x, y in points[:3])
    box = dlib.rectangle(
        round(face.x), round(face.y), round(face.x + face.width), round(face.y + face.height)
    )
    # dlib's 5-part order: image-right eye outer and inner corner, image-left eye outer
    # and inner corner, base of the nose.
    shape = dlib.full_object_detection(box, [right_eye, right_eye, left_eye, left_eye, nose])
    chip = dlib.get_face_chip(image, shape, size=CHIP_SIZE, padding=CHIP_PADDING)
    return np.ascontiguousarray(chip, dtype=np.uint8)


def align(image: Image, face: Face | None, alignment: Alignment = "template5") -> Image:
    """dlib's 150x150 face chip of `face` (RGB uint8)."""
    if alignment == "template5":
        return align_template5(image, face)
    if alignment == "dlib5":
        return align_dlib5(image, face)
    raise ValueError(f"unknown alignment {alignment!r}; choose from {ALIGNMENTS}")


def normalised(vector: NDArray[np.float64] | NDArray[np.float32]) -> NDArray[np.float32]:
    norm = float(np.linalg.norm(vector))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("the face descriptor is zero or not finite")
    return np.asarray(vector / norm, dtype=np.float32)


@dataclass
class DlibResNetEmbedder:
    """dlib's face-recognition ResNet on an aligned chip: a unit 128-d template per face.

    `net` is a `dlib.face_recognition_model_v1` (built by `from_file`). The template's
    version names the file, the alignment and whether the mirror is averaged in: each
    changes the template space, and templates only compare within one space.
    """

    net: Any
    #: Off by default: it doubles the time (one more descriptor) for about 1.7 points of
    #: TAR at FAR 0.1 % on LFW (docs/models.md).
    flip_average: bool = False
    alignment: Alignment = "template5"
    key: str = field(default="dlib_resnet_v1", init=False)
    info: ModelInfo = field(
        default=ModelInfo(name="dlib_resnet_v1", version="dlib_face_recognition_resnet_model_v1")
    )
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                  compare=False)  # fmt: skip

    @classmethod
    def from_file(cls, path: Path, **options: Any) -> DlibResNetEmbedder:
        import dlib

        return cls(net=dlib.face_recognition_model_v1(str(path)), **options)

    @property
    def template_version(self) -> str:
        return f"{self.info.version}+{self.alignment}{'+flip' if self.flip_average else ''}"

    def describe(self, chip: Image) -> NDArray[np.float64]:
        """The raw (not normalised) descriptor of one aligned 150x150 RGB chip."""
        if chip.shape != (CHIP_SIZE, CHIP_SIZE, 3) or chip.dtype != np.uint8:
            raise ValueError(f"expected a {CHIP_SIZE}x{CHIP_SIZE} RGB uint8 chip")
        # dlib's network reuses its layer buffers on every call: one call at a time per net,
        # since a worker runs near and far of a stage on two threads.
        with self._lock:
            return np.asarray(self.net.compute_face_descriptor(chip), dtype=np.float64)

    def embed_chip(self, chip: Image) -> NDArray[np.float32]:
        vector = normalised(self.describe(chip))
        if self.flip_average:
            mirrored = np.ascontiguousarray(chip[:, ::-1])
            vector = normalised(vector + normalised(self.describe(mirrored)))
        return vector

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        vector = self.embed_chip(align(image, face, self.alignment))
        return ModelResult(
            scores={},
            embedding=Embedding(self.info.name, self.template_version, vector),
            details={"alignment": self.alignment, "flip_average": self.flip_average},
        )
