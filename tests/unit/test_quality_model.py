from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from services.face_detector.model import detect_faces
from services.quality.model import (
    ClassicMetrics,
    crete_blur,
    face_region,
    skin_region,
    svd_concentration,
)
from shared.analysis import Face, Image, Model

KEYS = {"sharpness", "colorfulness", "contrast", "brightness", "blur_score", "svd_score"}


def subjects(image: Image, face: Face | None, model: ClassicMetrics | None = None) -> set[str]:
    result = (model or ClassicMetrics()).analyze(image, face)
    assert {r.code for r in result.rejections} <= {"low_quality"}
    return {r.subject for r in result.rejections if r.subject}


def test_implements_the_model_contract() -> None:
    model = ClassicMetrics()
    assert isinstance(model, Model)
    assert model.key == "classic_metrics"
    assert model.info.name == "classic_metrics"


@pytest.mark.parametrize("name", ["astronaut", "tom_hanks"])
def test_real_faces_pass(name: str, request: pytest.FixtureRequest) -> None:
    image, face = request.getfixturevalue(name), request.getfixturevalue(f"{name}_face")
    result = ClassicMetrics().analyze(image, face)
    assert set(result.scores) == KEYS
    assert result.rejections == ()
    assert result.scores["sharpness"] > 300
    assert 100 < result.scores["brightness"] < 200


def test_whole_image_is_measured_without_a_face(astronaut: Image, astronaut_face: Face) -> None:
    whole = ClassicMetrics().analyze(astronaut, None).scores
    face = ClassicMetrics().analyze(astronaut, astronaut_face).scores
    assert whole["colorfulness"] > face["colorfulness"]  # the flag and the orange suit
    assert whole != face


@pytest.mark.parametrize("sigma", [2.0, 6.0])
def test_gaussian_blur_is_rejected_for_sharpness_and_blur(
    astronaut: Image, astronaut_face: Face, sigma: float
) -> None:
    blurred = cv2.GaussianBlur(astronaut, (0, 0), sigma)
    assert {"sharpness", "blur_score"} <= subjects(blurred, astronaut_face)


def test_blurred_small_crop_is_rejected(tom_hanks: Image, tom_hanks_face: Face) -> None:
    blurred = cv2.GaussianBlur(tom_hanks, (0, 0), 3.0)
    assert "blur_score" in subjects(blurred, tom_hanks_face)


def test_motion_blur_is_rejected(astronaut: Image, astronaut_face: Face) -> None:
    smeared = cv2.filter2D(astronaut, -1, np.ones((1, 15), np.float32) / 15)
    assert {"blur_score", "svd_score"} <= subjects(smeared, astronaut_face)


def test_darkened_face_is_rejected_for_brightness(astronaut: Image, astronaut_face: Face) -> None:
    dark = (astronaut * 0.15).astype(np.uint8)
    result = ClassicMetrics().analyze(dark, astronaut_face)
    assert result.scores["brightness"] < 30
    assert "brightness" in {r.subject for r in result.rejections}
    assert any("dark" in r.detail for r in result.rejections)


def test_overexposed_face_is_rejected_for_brightness(
    astronaut: Image, astronaut_face: Face
) -> None:
    bright = np.clip(astronaut.astype(np.float32) * 3 + 60, 0, 255).astype(np.uint8)
    result = ClassicMetrics().analyze(bright, astronaut_face)
    [over] = [r for r in result.rejections if r.subject == "brightness"]
    assert "over-exposed" in over.detail


def test_washed_out_face_is_rejected_for_contrast(astronaut: Image, astronaut_face: Face) -> None:
    flat = (astronaut * 0.15 + 110).astype(np.uint8)
    assert "contrast" in subjects(flat, astronaut_face)


def test_sensor_noise_and_jpeg_do_not_reject(astronaut: Image, astronaut_face: Face) -> None:
    noisy = np.clip(astronaut + np.random.default_rng(0).normal(0, 8, astronaut.shape), 0, 255)
    ok, jpeg = cv2.imencode(".jpg", astronaut, [cv2.IMWRITE_JPEG_QUALITY, 30])
    assert ok
    for image in (noisy.astype(np.uint8), cv2.imdecode(jpeg, cv2.IMREAD_COLOR)):
        assert subjects(image, astronaut_face) == set()


def test_upscaled_image_passes(astronaut: Image, retinaface_session: ort.InferenceSession) -> None:
    big = cv2.resize(astronaut, (1280, 960), interpolation=cv2.INTER_CUBIC)
    (face,) = detect_faces(retinaface_session, big)
    assert subjects(big, face) == set()


def test_blur_measures_grow_with_blur(astronaut: Image) -> None:
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY).astype(np.float64) / 255
    blurs = [crete_blur(cv2.GaussianBlur(gray, (0, 0), s)) for s in (0.5, 1.5, 4.0)]
    svds = [svd_concentration(cv2.GaussianBlur(gray, (0, 0), s)) for s in (0.5, 1.5, 4.0)]
    assert blurs == sorted(blurs)
    assert 0.0 <= blurs[0] < blurs[-1] <= 1.0
    assert svds == sorted(svds)
    assert 0.0 < svds[0] < svds[-1] <= 1.0


def test_colorfulness_is_zero_for_greyscale_and_can_be_required(
    tom_hanks: Image, tom_hanks_face: Face, astronaut: Image, astronaut_face: Face
) -> None:
    strict = ClassicMetrics(min_colorfulness=10.0)
    assert ClassicMetrics().analyze(tom_hanks, tom_hanks_face).scores["colorfulness"] == 0.0
    assert subjects(tom_hanks, tom_hanks_face, strict) == {"colorfulness"}
    assert subjects(astronaut, astronaut_face, strict) == set()


def test_face_region_adds_a_margin_and_stays_inside(astronaut: Image, astronaut_face: Face) -> None:
    crop = face_region(astronaut, astronaut_face, margin=0.2)
    assert crop.shape[0] == pytest.approx(1.4 * astronaut_face.height, abs=2)
    assert crop.shape[1] == pytest.approx(1.4 * astronaut_face.width, abs=2)
    edge = Face(-50, -50, 100, 100, 0.9, landmarks=())
    assert face_region(astronaut, edge, margin=0.2).shape[:2] == (70, 70)


def test_brightness_is_measured_on_the_skin_not_the_background(
    astronaut: Image, astronaut_face: Face
) -> None:
    before = ClassicMetrics().analyze(astronaut, astronaut_face).scores
    # Black out everything but the face box: the background goes, the skin stays.
    dark = np.zeros_like(astronaut)
    x, y = int(astronaut_face.x), int(astronaut_face.y)
    w, h = int(astronaut_face.width), int(astronaut_face.height)
    dark[y : y + h, x : x + w] = astronaut[y : y + h, x : x + w]
    after = ClassicMetrics().analyze(dark, astronaut_face).scores
    assert after["brightness"] == pytest.approx(before["brightness"])
    assert after["contrast"] == pytest.approx(before["contrast"])


def test_skin_region_lies_between_the_eyes_and_the_mouth(
    astronaut: Image, astronaut_face: Face
) -> None:
    skin = skin_region(astronaut, astronaut_face)
    (lx, ly), (rx, ry), _, (mlx, mly), (mrx, mry) = astronaut_face.landmarks
    assert skin.shape[0] < (min(mly, mry) - max(ly, ry))
    assert skin.shape[1] == pytest.approx(max(rx, mrx) - min(lx, mlx), abs=2)
    no_marks = Face(astronaut_face.x, astronaut_face.y, 100, 100, 0.9, ())
    rows, cols = skin_region(astronaut, no_marks).shape[:2]
    assert rows == pytest.approx(30, abs=1) and cols == pytest.approx(50, abs=1)
