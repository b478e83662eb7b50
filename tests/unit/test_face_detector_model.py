from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import retinaface

from services.face_detector.model import RetinaFaceDetector, detect_faces
from shared.analysis import Image, Model, ModelResult


def codes(result: ModelResult) -> list[str]:
    return [r.code for r in result.rejections]


@pytest.fixture(scope="module")
def detector(retinaface_session: ort.InferenceSession) -> RetinaFaceDetector:
    return RetinaFaceDetector(retinaface_session)


def selfie(astronaut: Image) -> Image:
    """Head-and-shoulders framing: the face is ~40 % of the image height."""
    return astronaut[0:300, 100:350].copy()


def test_implements_the_model_contract(detector: RetinaFaceDetector) -> None:
    assert isinstance(detector, Model)
    assert detector.key == "face_detector"
    assert detector.info.name == "retinaface_mobilenet"


def test_finds_exactly_one_face_in_astronaut(
    detector: RetinaFaceDetector, astronaut: Image
) -> None:
    result = detector.analyze(astronaut, None)
    assert result.scores["face_count"] == 1
    assert result.scores["face_score"] > 0.99
    assert result.face is not None
    # The face is in the upper middle of the portrait, about 95x120 px.
    assert 170 < result.face.x < 190 and 50 < result.face.y < 65
    assert 85 < result.face.width < 105 and 110 < result.face.height < 130
    assert len(result.face.landmarks) == 5


def test_accepts_a_selfie_framing(detector: RetinaFaceDetector, astronaut: Image) -> None:
    result = detector.analyze(selfie(astronaut), None)
    assert result.rejections == ()
    assert result.face is not None
    assert result.scores["face_area_ratio"] > 0.1
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = result.face.landmarks
    # Landmarks in the documented order, as seen in the image.
    assert lx < nx < rx and mlx < mrx
    assert max(ly, ry) < ny < min(mly, mry)


def test_decoding_matches_the_reference_package(
    retinaface_session: ort.InferenceSession, astronaut: Image, group: Image
) -> None:
    for image in (astronaut, group[:640, :640]):
        ours = detect_faces(retinaface_session, image, max_side=640, score_threshold=0.9)
        theirs = retinaface.detect_faces(image, score_threshold=0.9)
        assert len(ours) == len(theirs) > 0
        for face in ours:
            # The package truncates to int; allow for that.
            assert any(abs(face.x - t.x) <= 2 and abs(face.width - t.width) <= 2 for t in theirs)


def test_maps_boxes_back_to_full_resolution(detector: RetinaFaceDetector, astronaut: Image) -> None:
    small = detector.analyze(astronaut, None).face
    big_image = np.asarray(
        cv2.resize(astronaut, (1280, 960), interpolation=cv2.INTER_CUBIC), np.uint8
    )
    big = detector.analyze(big_image, None).face
    assert small is not None and big is not None
    cx, cy = big.x + big.width / 2, big.y + big.height / 2
    assert cx == pytest.approx((small.x + small.width / 2) * 1280 / 512, abs=10)
    assert cy == pytest.approx((small.y + small.height / 2) * 960 / 512, abs=10)


def test_rejects_group_photo_for_multiple_faces(detector: RetinaFaceDetector, group: Image) -> None:
    result = detector.analyze(group, None)
    assert codes(result) == ["multiple_faces"]
    assert result.scores["face_count"] == 6
    assert len(result.details["faces"]) == 6  # type: ignore[arg-type]
    assert result.face is not None  # the largest face is still reported


def test_caps_the_reported_face_list_at_ten(
    retinaface_session: ort.InferenceSession, group: Image
) -> None:
    result = RetinaFaceDetector(retinaface_session, max_side=1280).analyze(
        np.asarray(np.hstack([group, group]), np.uint8), None
    )
    assert codes(result) == ["multiple_faces"]
    assert result.scores["face_count"] == 12
    assert len(result.details["faces"]) == 10  # type: ignore[arg-type]


def _with_bystander(astronaut: Image, scale: float) -> Image:
    main = selfie(astronaut)
    small = cv2.resize(main, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    canvas = np.full((300, 260 + small.shape[1], 3), 200, dtype=np.uint8)
    canvas[:, :250] = main
    canvas[10 : 10 + small.shape[0], 260:] = small
    return canvas


def test_accepts_a_much_smaller_bystander_and_reports_it(
    detector: RetinaFaceDetector, astronaut: Image
) -> None:
    result = detector.analyze(_with_bystander(astronaut, 0.5), None)
    assert result.rejections == ()
    assert result.scores["face_count"] == 2
    assert result.scores["presenting_faces"] == 1
    assert result.face is not None and result.face.x < 250  # the main face, not the bystander
    faces = result.details["faces"]
    assert isinstance(faces, list)
    main, other = faces
    assert main["main"] is True
    assert other["ignored_because"] == ["smaller"]
    assert 0.4 < other["size_ratio"] < 0.6


def test_rejects_a_second_face_of_similar_size(
    detector: RetinaFaceDetector, astronaut: Image
) -> None:
    result = detector.analyze(_with_bystander(astronaut, 0.9), None)
    assert codes(result) == ["multiple_faces"]
    assert result.scores["presenting_faces"] == 2
    assert "0.9" in result.rejections[0].detail


@pytest.mark.parametrize("name", ["cat", "coffee"])
def test_rejects_when_no_face_found(
    detector: RetinaFaceDetector, name: str, request: pytest.FixtureRequest
) -> None:
    result = detector.analyze(request.getfixturevalue(name), None)
    assert codes(result) == ["no_face"]
    assert result.face is None
    assert result.scores["face_count"] == 0


def test_rejects_face_shrunk_into_large_canvas_as_too_small(
    detector: RetinaFaceDetector, astronaut: Image
) -> None:
    canvas = np.full((1280, 1280, 3), 128, dtype=np.uint8)
    canvas[500:756, 500:756] = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    result = detector.analyze(canvas, None)
    assert codes(result) == ["face_too_small"]
    assert result.rejections[0].subject == "face_px"
    assert result.face is not None and result.scores["face_height_px"] < 64
    width = round(result.face.width)
    assert f"The face is {width} px wide; at least 64 px is needed." in (
        result.rejections[0].detail
    )


def test_rejects_face_below_minimum_share_of_image_height(
    retinaface_session: ort.InferenceSession, astronaut: Image
) -> None:
    # Above 64 px but under 5 % of a 2800 px tall image: a scene, not a selfie.
    canvas = np.full((2800, 1200, 3), 128, dtype=np.uint8)
    canvas[1000:1512, 300:812] = astronaut
    result = RetinaFaceDetector(retinaface_session, max_side=1280).analyze(canvas, None)
    assert codes(result) == ["face_too_small"]
    assert result.rejections[0].subject == "face_ratio"
    assert result.face is not None
    share = f"{result.face.height / 2800:.1%}"
    assert f"{share} of the image height; at least 5.0% is needed" in result.rejections[0].detail


@pytest.mark.parametrize(
    ("rows", "cols"),
    [
        (slice(20, 300), slice(200, 450)),  # right part of the face cut by the left border
        (slice(90, 340), slice(100, 350)),  # forehead cut by the top border
        (slice(0, 150), slice(100, 350)),  # chin cut by the bottom border
    ],
)
def test_rejects_face_shifted_out_of_frame_as_cut_off(
    detector: RetinaFaceDetector, astronaut: Image, rows: slice, cols: slice
) -> None:
    result = detector.analyze(astronaut[rows, cols].copy(), None)
    assert "face_cut_off" in codes(result)
    assert result.face is not None


def test_score_threshold_is_respected(retinaface_session: ort.InferenceSession, cat: Image) -> None:
    # The cat's best false detection scores ~0.18: found at 0.1, not at the default.
    assert detect_faces(retinaface_session, cat, score_threshold=0.1)
    assert not detect_faces(retinaface_session, cat)


def test_rejects_non_rgb_input(detector: RetinaFaceDetector, astronaut: Image) -> None:
    with pytest.raises(ValueError, match="RGB"):
        detector.analyze(astronaut[..., 0].copy(), None)
