"""Shared test helpers: real photographs from installed packages."""

from __future__ import annotations

import pytest

from shared.analysis import Image
from shared.imaging import encode_jpeg
from tools.samples import astronaut_pair, blurred_pair, no_face_pair


@pytest.fixture(scope="session")
def astronaut_jpegs() -> tuple[bytes, bytes]:
    near, far = astronaut_pair()
    return encode_jpeg(near), encode_jpeg(far)


@pytest.fixture(scope="session")
def no_face_jpegs() -> tuple[bytes, bytes]:
    near, far = no_face_pair()
    return encode_jpeg(near), encode_jpeg(far)


@pytest.fixture(scope="session")
def blurred_jpegs() -> tuple[bytes, bytes]:
    near, far = blurred_pair()
    return encode_jpeg(near), encode_jpeg(far)


def jpeg(image: Image) -> bytes:
    return encode_jpeg(image)
