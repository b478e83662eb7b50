from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from services.accessory.model import AccessoryHeuristics
from services.face_detector.model import detect_faces
from shared.analysis import Face, Image, Model

THRESHOLDS = AccessoryHeuristics()


def eye_geometry(face: Face) -> tuple[np.ndarray, float]:
    marks = np.asarray(face.landmarks)
    return marks, float(np.hypot(*(marks[1] - marks[0])))


def paint_sunglasses(image: Image, face: Face) -> Image:
    out = image.copy()
    marks, iod = eye_geometry(face)
    for x, y in marks[:2]:
        axes = (int(0.42 * iod), int(0.3 * iod))
        cv2.ellipse(out, (int(x), int(y)), axes, 0, 0, 360, (15, 15, 18), -1)
    cv2.line(out, tuple(marks[0].astype(int)), tuple(marks[1].astype(int)), (15, 15, 18), 2)
    return out


def paste_mask(image: Image, face: Face, texture: Image) -> Image:
    """The mask texture over everything below the nose, cheek to cheek."""
    out = image.copy()
    marks, iod = eye_geometry(face)
    x0 = max(0, int(face.x))
    x1 = min(image.shape[1], int(face.x + face.width))
    y0 = int(marks[2][1] + 0.1 * iod)
    y1 = min(image.shape[0], int(face.y + 1.05 * face.height))
    out[y0:y1, x0:x1] = cv2.resize(texture, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out


def paint_flat_mask(image: Image, face: Face) -> Image:
    out = image.copy()
    marks, iod = eye_geometry(face)
    top = marks[2][1] + 0.15 * iod
    bottom = face.y + 1.05 * face.height
    polygon = np.array(
        [
            [face.x, top],
            [face.x + face.width, top],
            [face.x + 0.9 * face.width, bottom],
            [face.x + 0.1 * face.width, bottom],
        ],
        dtype=np.int32,
    )
    cv2.fillPoly(out, [polygon], (150, 190, 230))
    return out


def draw_spectacles(image: Image, face: Face) -> Image:
    out = image.copy()
    marks, iod = eye_geometry(face)
    thickness = max(1, int(0.05 * iod))
    for x, y in marks[:2]:
        top_left = (int(x - 0.38 * iod), int(y - 0.25 * iod))
        bottom_right = (int(x + 0.38 * iod), int(y + 0.3 * iod))
        cv2.rectangle(out, top_left, bottom_right, (30, 30, 30), thickness)
    (lx, ly), (rx, ry) = marks[0], marks[1]
    start = (int(lx + 0.38 * iod), int(ly - 0.1 * iod))
    end = (int(rx - 0.38 * iod), int(ry - 0.1 * iod))
    cv2.line(out, start, end, (30, 30, 30), thickness)
    return out


def paint_hat(image: Image, face: Face) -> Image:
    """A dark blue hat whose brim sits just above the eyebrows."""
    out = image.copy()
    marks, iod = eye_geometry(face)
    brim = int(min(marks[0][1], marks[1][1]) - 0.35 * iod)
    x0, x1 = max(0, int(face.x - 0.3 * face.width)), int(face.x + 1.3 * face.width)
    out[max(0, brim - int(2 * iod)) : brim, x0:x1] = (40, 60, 120)
    return out


def test_implements_the_model_contract() -> None:
    model = AccessoryHeuristics()
    assert isinstance(model, Model)
    assert model.key == "accessory_detector"
    assert model.info.name == "accessory_detector"


@pytest.mark.parametrize("name", ["astronaut", "tom_hanks"])
def test_bare_real_faces_pass(name: str, request: pytest.FixtureRequest) -> None:
    image, face = request.getfixturevalue(name), request.getfixturevalue(f"{name}_face")
    result = AccessoryHeuristics().analyze(image, face)
    assert result.rejections == ()
    assert set(result.scores) == {"sunglasses", "glasses", "face_mask", "hat"}
    assert all(0.0 <= v <= 0.2 for v in result.scores.values()), result.scores


def test_group_faces_pass(retinaface_session: ort.InferenceSession, group: Image) -> None:
    faces = detect_faces(retinaface_session, group, max_side=1280)
    assert len(faces) == 6
    for face in faces:
        assert AccessoryHeuristics().analyze(group, face).rejections == ()


@pytest.mark.parametrize("name", ["astronaut", "tom_hanks"])
def test_dark_painted_eye_region_is_detected_as_sunglasses(
    name: str, request: pytest.FixtureRequest
) -> None:
    image, face = request.getfixturevalue(name), request.getfixturevalue(f"{name}_face")
    result = AccessoryHeuristics().analyze(paint_sunglasses(image, face), face)
    assert result.scores["sunglasses"] > 0.9
    subjects = [r.subject for r in result.rejections]
    assert "sunglasses" in subjects
    assert {r.code for r in result.rejections} == {"accessory_detected"}
    assert result.scores["face_mask"] < THRESHOLDS.face_mask_threshold


def test_mask_texture_over_lower_face_is_detected_as_face_mask(
    astronaut: Image, astronaut_face: Face, mask_texture: Image
) -> None:
    masked = paste_mask(astronaut, astronaut_face, mask_texture)
    result = AccessoryHeuristics().analyze(masked, astronaut_face)
    assert result.scores["face_mask"] > 0.9
    assert [r.subject for r in result.rejections] == ["face_mask"]
    assert "mask" in result.rejections[0].detail


def test_flat_light_blue_polygon_over_lower_face_is_detected_as_face_mask(
    astronaut: Image, astronaut_face: Face
) -> None:
    result = AccessoryHeuristics().analyze(
        paint_flat_mask(astronaut, astronaut_face), astronaut_face
    )
    assert [r.subject for r in result.rejections] == ["face_mask"]


def test_drawn_spectacle_frames_are_detected_as_glasses(
    astronaut: Image, astronaut_face: Face
) -> None:
    bare = AccessoryHeuristics().analyze(astronaut, astronaut_face).scores["glasses"]
    result = AccessoryHeuristics().analyze(
        draw_spectacles(astronaut, astronaut_face), astronaut_face
    )
    assert bare < 0.1
    assert result.scores["glasses"] > 0.9
    assert [r.subject for r in result.rejections] == ["glasses"]


def test_hat_down_to_the_eyebrows_is_detected(astronaut: Image, astronaut_face: Face) -> None:
    result = AccessoryHeuristics().analyze(paint_hat(astronaut, astronaut_face), astronaut_face)
    assert result.scores["hat"] > 0.9
    assert [r.subject for r in result.rejections] == ["hat"]


def test_darkened_and_blurred_faces_are_not_taken_for_accessories(
    astronaut: Image, astronaut_face: Face
) -> None:
    dark = (astronaut * 0.15).astype(np.uint8)
    blurred = cv2.GaussianBlur(astronaut, (0, 0), 6)
    for image in (dark, blurred):
        assert AccessoryHeuristics().analyze(image, astronaut_face).rejections == ()


def test_thresholds_are_configurable(astronaut: Image, astronaut_face: Face) -> None:
    image = paint_sunglasses(astronaut, astronaut_face)
    lenient = AccessoryHeuristics(sunglasses_threshold=1.01, glasses_threshold=1.01)
    assert lenient.analyze(image, astronaut_face).rejections == ()


def test_requires_a_detected_face(astronaut: Image, astronaut_face: Face) -> None:
    with pytest.raises(ValueError, match="face"):
        AccessoryHeuristics().analyze(astronaut, None)
    no_landmarks = Face(astronaut_face.x, astronaut_face.y, 90, 120, 0.99, landmarks=())
    with pytest.raises(ValueError, match="landmarks"):
        AccessoryHeuristics().analyze(astronaut, no_landmarks)
