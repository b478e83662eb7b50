"""The kinds of selfie pairs `faceval simulate` sends, built from the bundled samples.

Good pairs come from `tools.samples`; the others are made from them the way real
captures fail: out of focus, underexposed, a surgical mask over the lower face (painted
where the real detector finds the nose and mouth), no face at all, or a group photo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from shared.analysis import Face, Image
from shared.imaging import encode_jpeg
from tools.samples import (
    astronaut_pair,
    blurred_pair,
    group_member_pair,
    group_pair,
    no_face_pair,
)

Pair = tuple[Image, Image]


@dataclass(frozen=True)
class Kind:
    name: str
    #: Share of first attempts of this kind.
    weight: float
    make: Callable[[], list[Pair]]


def darken(image: Image, factor: float = 0.16) -> Image:
    """Underexposure: scaled intensities plus sensor noise, as in a dim room."""
    noise = np.random.default_rng(0).normal(0, 2.0, image.shape)
    dark = np.clip(image.astype(np.float32) * factor + noise, 0, 255)
    return np.ascontiguousarray(dark, dtype=np.uint8)


def _mask_texture() -> Image:
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / "mask_blue.jpg"
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def mask_lower_face(image: Image, face: Face, texture: Image) -> Image:
    """The mask texture from just below the nose tip to the chin, cheek to cheek."""
    marks = np.asarray(face.landmarks)
    eye_distance = float(np.hypot(*(marks[1] - marks[0])))
    x0, x1 = max(0, int(face.x)), min(image.shape[1], int(face.x + face.width))
    y0 = int(marks[2][1] + 0.1 * eye_distance)
    y1 = min(image.shape[0], int(face.y + 1.05 * face.height))
    out = image.copy()
    out[y0:y1, x0:x1] = cv2.resize(texture, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out


def _detector() -> Callable[[Image], list[Face]]:
    import onnxruntime as ort
    import retinaface.weights

    from services.face_detector.model import detect_faces

    session = ort.InferenceSession(retinaface.weights.WEIGHTS, providers=["CPUExecutionProvider"])
    return lambda image: detect_faces(session, image)


def masked_pairs() -> list[Pair]:
    detect, texture = _detector(), _mask_texture()
    pairs = []
    for near, far in (astronaut_pair(), group_member_pair()):
        masked = []
        for image in (near, far):
            faces = detect(image)
            masked.append(mask_lower_face(image, faces[0], texture) if faces else image)
        pairs.append((masked[0], masked[1]))
    return pairs


def dark_pairs() -> list[Pair]:
    return [(darken(n), darken(f)) for n, f in (astronaut_pair(), group_member_pair())]


KINDS: tuple[Kind, ...] = (
    Kind("good", 0.45, lambda: [astronaut_pair(), group_member_pair()]),
    Kind("blurred", 0.14, lambda: [blurred_pair()]),
    Kind("dark", 0.12, dark_pairs),
    Kind("masked", 0.13, masked_pairs),
    Kind("no_face", 0.10, lambda: [no_face_pair()]),
    Kind("group_photo", 0.06, lambda: [group_pair()]),
)


def jpeg_bank() -> dict[str, list[tuple[bytes, bytes]]]:
    """Every kind's pairs, encoded once (the gateway reads bytes, not arrays)."""
    return {k.name: [(encode_jpeg(n), encode_jpeg(f)) for n, f in k.make()] for k in KINDS}
