"""Sample near/far pairs built from real photographs that ship inside installed packages.

Nothing is downloaded: faces come from scikit-image's `astronaut` (NASA, public domain)
and insightface's `t1.jpg`; non-face images from scikit-image. A near/far pair is made
from one photograph by cropping tighter (near) and wider (far), so the face fills more of
the near frame, as in a two-moment capture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from shared.analysis import Image
from shared.imaging import encode_jpeg


@dataclass(frozen=True)
class SamplePair:
    name: str
    #: What the pipeline should answer: a summary reason, and the stage that decides.
    expected_reason: str
    expected_stage: str | None
    make: Callable[[], tuple[Image, Image]]


def _astronaut() -> Image:
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def _insightface_image(name: str) -> Image:
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / name
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return np.ascontiguousarray(bgr[:, :, ::-1])


def _crop(image: Image, x0: int, y0: int, x1: int, y1: int, scale: float = 1.0) -> Image:
    part = image[y0:y1, x0:x1]
    if scale == 1.0:
        return np.ascontiguousarray(part)
    resized = cv2.resize(part, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    return np.ascontiguousarray(resized, dtype=np.uint8)


def astronaut_pair() -> tuple[Image, Image]:
    image = _astronaut()
    return _crop(image, 110, 0, 350, 300, scale=2.0), image


def group_member_pair() -> tuple[Image, Image]:
    image = _insightface_image("t1.jpg")
    # One person of the group photo, framed so no neighbour's face is in either crop.
    return _crop(image, 653, 240, 933, 590, scale=2.0), _crop(image, 560, 215, 1050, 886)


def group_pair() -> tuple[Image, Image]:
    image = _insightface_image("t1.jpg")
    return image, _crop(image, 0, 0, 1280, 886, scale=0.75)


def no_face_pair() -> tuple[Image, Image]:
    from skimage import data

    return np.ascontiguousarray(data.coffee()), np.ascontiguousarray(data.chelsea())


def _blur(image: Image) -> Image:
    return np.ascontiguousarray(cv2.GaussianBlur(image, (0, 0), sigmaX=6), dtype=np.uint8)


def blurred_pair() -> tuple[Image, Image]:
    near, far = astronaut_pair()
    return _blur(near), _blur(far)


def _landmarks(image: Image) -> tuple[tuple[float, float], ...]:
    """The five landmarks of the image's largest face, from the production detector."""
    import onnxruntime as ort
    import retinaface.weights

    from services.face_detector.model import detect_faces

    session = ort.InferenceSession(retinaface.weights.WEIGHTS, providers=["CPUExecutionProvider"])
    faces = detect_faces(session, image)
    if not faces:
        raise ValueError("no face in the sample image")
    return max(faces, key=lambda f: f.width * f.height).landmarks


def masked_pair() -> tuple[Image, Image]:
    """The astronaut wearing a light-blue surgical mask over nose and mouth."""
    from tools.synth.accessories import opaque_mask

    near, far = astronaut_pair()
    return (opaque_mask(near, _landmarks(near), (150, 195, 230)),
            opaque_mask(far, _landmarks(far), (150, 195, 230)))  # fmt: skip


def sunglasses_pair() -> tuple[Image, Image]:
    """The group member wearing dark sunglasses."""
    from tools.synth.accessories import dark_sunglasses

    near, far = group_member_pair()
    return dark_sunglasses(near, _landmarks(near)), dark_sunglasses(far, _landmarks(far))


def two_people_pair() -> tuple[Image, Image]:
    """Near: the astronaut; far: the group member, another person (a swapped capture)."""
    return astronaut_pair()[0], group_member_pair()[1]


SAMPLES: tuple[SamplePair, ...] = (
    SamplePair("astronaut", "accepted", None, astronaut_pair),
    SamplePair("group_member", "accepted", None, group_member_pair),
    SamplePair("no_face", "no_face", "face_detector", no_face_pair),
    SamplePair("group_photo", "multiple_faces", "face_detector", group_pair),
    SamplePair("blurred", "low_quality", "quality", blurred_pair),
    SamplePair("masked", "face_mask", "accessory", masked_pair),
    SamplePair("sunglasses", "sunglasses", "accessory", sunglasses_pair),
    SamplePair("two_people", "face_mismatch", "identity", two_people_pair),
)


def write_samples(directory: Path) -> list[tuple[SamplePair, Path, Path]]:
    """Write every pair as JPEG files; returns (sample, near path, far path)."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for sample in SAMPLES:
        near, far = sample.make()
        paths = []
        for side, image in (("near", near), ("far", far)):
            path = directory / f"{sample.name}_{side}.jpg"
            path.write_bytes(encode_jpeg(image))
            paths.append(path)
        written.append((sample, paths[0], paths[1]))
    return written
