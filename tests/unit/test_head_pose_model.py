"""Head pose from five landmarks: geometry, symmetry, real faces and the head_pose decision."""

from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from services.face_detector.model import detect_faces
from services.face_detector.pose import (
    NOSE_DEPTH,
    NOSE_DEPTH_VERTICAL,
    NOSE_LEVEL,
    HeadPose,
    estimate_pose,
)
from shared.analysis import Face, Image, Model


def project(yaw: float, pitch: float) -> list[tuple[float, float]]:
    """Orthographic image of a head whose proportions are the module's constants.

    Eyes one unit apart; the nose tip NOSE_DEPTH in front of them (towards the camera,
    negative z) and NOSE_LEVEL of the way down to the mouth line.
    """
    down = NOSE_DEPTH / NOSE_DEPTH_VERTICAL
    points = np.array(
        [
            [-0.5, 0.0, 0.0],
            [0.5, 0.0, 0.0],
            [0.0, NOSE_LEVEL * down, -NOSE_DEPTH],
            [-0.4, down, 0.0],
            [0.4, down, 0.0],
        ]
    )
    y, p = math.radians(yaw), math.radians(pitch)
    # Positive yaw turns the nose to the image's right; positive pitch lowers it.
    turn = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
    nod = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rotated = points @ (nod @ turn).T
    return [(100 + 60 * x, 100 + 60 * yy) for x, yy, _ in rotated]


@pytest.mark.parametrize("yaw", [-40.0, -15.0, 0.0, 20.0, 40.0])
def test_recovers_the_yaw_of_a_projected_head(yaw: float) -> None:
    pose = estimate_pose(project(yaw, 0.0))
    assert pose.yaw == pytest.approx(yaw, abs=1.0)
    assert pose.roll == pytest.approx(0.0, abs=0.1)


@pytest.mark.parametrize("pitch", [-20.0, 0.0, 25.0])
def test_recovers_the_pitch_of_a_projected_head(pitch: float) -> None:
    assert estimate_pose(project(0.0, pitch)).pitch == pytest.approx(pitch, abs=1.5)


def _detect(session: ort.InferenceSession, image: Image) -> Face:
    faces = detect_faces(session, image, max_side=1280)
    return max(faces, key=lambda f: f.width * f.height)


def test_the_frontal_astronaut_is_near_zero_yaw_and_roll(astronaut_face: Face) -> None:
    pose = estimate_pose(astronaut_face.landmarks)
    assert abs(pose.yaw) < 8 and abs(pose.roll) < 8


def test_mirroring_the_image_negates_the_yaw_of_turned_heads(
    retinaface_session: ort.InferenceSession, group: Image
) -> None:
    width = group.shape[1]
    faces = sorted(detect_faces(retinaface_session, group, max_side=1280), key=lambda f: f.x)
    mirrored = sorted(
        detect_faces(retinaface_session, group[:, ::-1].copy(), max_side=1280),
        key=lambda f: width - f.x - f.width,
    )
    turned = [
        (estimate_pose(a.landmarks).yaw, estimate_pose(b.landmarks).yaw)
        for a, b in zip(faces, mirrored, strict=True)
        if abs(estimate_pose(a.landmarks).yaw) > 10
    ]
    assert len(turned) >= 3
    # RetinaFace's landmarks are not exactly mirror-symmetric: a few degrees of noise.
    for original, flipped in turned:
        assert flipped == pytest.approx(-original, abs=5.0)


def test_rotating_the_image_changes_roll_by_the_rotation(
    retinaface_session: ort.InferenceSession, astronaut: Image
) -> None:
    upright = estimate_pose(_detect(retinaface_session, astronaut).landmarks)
    # cv2 turns positive angles counter-clockwise, which raises the image-right eye.
    matrix = cv2.getRotationMatrix2D((256, 256), 20, 1.0)
    turned = cv2.warpAffine(astronaut, matrix, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    tilted = estimate_pose(_detect(retinaface_session, turned).landmarks)
    assert tilted.roll - upright.roll == pytest.approx(-20.0, abs=4.0)
    # Landmark noise under rotation moves yaw by a few degrees, not more.
    assert abs(tilted.yaw - upright.yaw) < 8.0


def test_rejects_the_turned_head_and_passes_the_frontal_one(
    retinaface_session: ort.InferenceSession, group: Image, astronaut_face: Face, astronaut: Image
) -> None:
    model = HeadPose()
    assert isinstance(model, Model)
    faces = detect_faces(retinaface_session, group, max_side=1280)
    yaws = sorted(abs(estimate_pose(f.landmarks).yaw) for f in faces)
    # One man in t1.jpg looks far to the side; the others face the table or camera.
    assert yaws[-1] > 45 and yaws[-2] < 40
    turned = max(faces, key=lambda f: abs(estimate_pose(f.landmarks).yaw))
    result = model.analyze(group, turned)
    assert [(r.code, r.subject) for r in result.rejections] == [("head_pose", "yaw")]
    assert model.analyze(astronaut, astronaut_face).rejections == ()


def test_pitch_is_reported_but_not_judged_by_default(astronaut: Image) -> None:
    face = Face(0, 0, 100, 100, 0.99, tuple(project(0.0, 35.0)))
    result = HeadPose().analyze(astronaut, face)
    assert result.scores["pitch"] > 30
    assert result.rejections == ()
    strict = HeadPose(max_pitch=20.0).analyze(astronaut, face)
    assert [r.subject for r in strict.rejections] == ["pitch"]


def test_hands_the_pose_on_with_the_face(astronaut: Image, astronaut_face: Face) -> None:
    result = HeadPose().analyze(astronaut, astronaut_face)
    assert result.face is not None and result.face.pose is not None
    assert result.face.pose == pytest.approx(
        (result.scores["yaw"], result.scores["pitch"], result.scores["roll"])
    )
    # The job message round trip keeps the pose, and a face without one has no such key.
    assert Face.from_dict(result.face.to_dict()) == result.face
    assert "pose" not in astronaut_face.to_dict()
    assert Face.from_dict(astronaut_face.to_dict()) == astronaut_face


def test_without_a_face_it_records_nothing_and_does_not_fail(astronaut: Image) -> None:
    result = HeadPose().analyze(astronaut, None)
    assert result.scores == {} and result.rejections == ()


def test_degenerate_landmarks_are_an_error(astronaut_face: Face) -> None:
    same = dataclasses.replace(astronaut_face, landmarks=((5.0, 5.0),) * 5)
    with pytest.raises(ValueError):
        estimate_pose(same.landmarks)
