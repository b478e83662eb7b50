"""Real images from installed packages, and the RetinaFace session, for the model tests."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import insightface
import numpy as np
import onnxruntime as ort
import pytest
import retinaface.weights
import skimage.data

from services.face_detector.model import detect_faces
from shared.analysis import Face, Image

INSIGHTFACE_IMAGES = Path(insightface.__file__).parent / "data" / "images"


def read_rgb(path: Path) -> Image:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, f"cannot read {path}"
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.fixture(scope="session")
def retinaface_session() -> ort.InferenceSession:
    return ort.InferenceSession(retinaface.weights.WEIGHTS, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="session")
def astronaut() -> Image:
    """512x512 portrait with one face (Eileen Collins)."""
    return np.asarray(skimage.data.astronaut(), dtype=np.uint8)


@pytest.fixture(scope="session")
def tom_hanks() -> Image:
    """112x112 tight, greyscale-looking face crop (stored as three equal channels)."""
    return read_rgb(INSIGHTFACE_IMAGES / "Tom_Hanks_54745.png")


@pytest.fixture(scope="session")
def group() -> Image:
    """1280x886 photo of six people."""
    return read_rgb(INSIGHTFACE_IMAGES / "t1.jpg")


@pytest.fixture(scope="session")
def cat() -> Image:
    return np.asarray(skimage.data.chelsea(), dtype=np.uint8)


@pytest.fixture(scope="session")
def coffee() -> Image:
    return np.asarray(skimage.data.coffee(), dtype=np.uint8)


@pytest.fixture(scope="session")
def mask_texture() -> Image:
    """A blue surgical-mask texture (no face) shipped with insightface."""
    return read_rgb(INSIGHTFACE_IMAGES / "mask_blue.jpg")


@pytest.fixture(scope="session")
def astronaut_face(retinaface_session: ort.InferenceSession, astronaut: Image) -> Face:
    faces = detect_faces(retinaface_session, astronaut)
    assert len(faces) == 1
    return faces[0]


@pytest.fixture(scope="session")
def tom_hanks_face(retinaface_session: ort.InferenceSession, tom_hanks: Image) -> Face:
    """Detected on a padded copy (the crop leaves no room around the face), then moved
    back into the crop's coordinates."""
    pad = 40
    padded = cv2.copyMakeBorder(tom_hanks, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    faces = detect_faces(retinaface_session, padded)
    assert len(faces) == 1
    face = faces[0]
    return dataclasses.replace(
        face,
        x=face.x - pad,
        y=face.y - pad,
        landmarks=tuple((x - pad, y - pad) for x, y in face.landmarks),
    )
