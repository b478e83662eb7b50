"""The pure framing rules on hand-made detections (services/face_detector/framing.py)."""

from __future__ import annotations

from services.face_detector.framing import FramingPolicy, near_far_framing
from shared.analysis import Face, ModelResult

W, H = 600, 800


def face(x: float, y: float, size: float, score: float = 0.999) -> Face:
    """A frontal face whose box is `size` px square, landmarks where RetinaFace puts them."""
    marks = (
        (x + 0.32 * size, y + 0.40 * size),
        (x + 0.68 * size, y + 0.40 * size),
        (x + 0.50 * size, y + 0.58 * size),
        (x + 0.36 * size, y + 0.76 * size),
        (x + 0.64 * size, y + 0.76 * size),
    )
    return Face(x=x, y=y, width=size, height=size, score=score, landmarks=marks)


SUBJECT = face(200, 250, 220)


def codes(result: ModelResult) -> list[str]:
    return [r.code for r in result.rejections]


def test_accepts_a_single_well_framed_face() -> None:
    result = FramingPolicy().judge([SUBJECT], W, H)
    assert result.rejections == ()
    assert result.face == SUBJECT
    assert result.scores["presenting_faces"] == 1


def test_small_bystander_at_the_border_is_reported_not_rejected() -> None:
    # The case: a 27x37 px bystander beside a 558x827 px subject.
    subject = Face(300, 200, 558, 827, 0.999, face(300, 200, 558).landmarks)
    bystander = Face(1, 40, 27, 37, 0.95, ())
    result = FramingPolicy().judge([bystander, subject], 1200, 1600)
    assert result.rejections == ()
    assert result.face == subject
    faces = result.details["faces"]
    assert isinstance(faces, list)
    _, other = faces
    assert set(other["ignored_because"]) == {"smaller", "at_border"}


def test_second_presenting_face_of_similar_size_is_rejected() -> None:
    friend = face(20, 270, 200)
    result = FramingPolicy().judge([SUBJECT, friend], W + 200, H)
    assert codes(result) == ["multiple_faces"]
    assert "0.91 times the main face's size" in result.rejections[0].detail


def test_a_similar_face_cut_by_the_border_does_not_reject() -> None:
    half_out = face(-110, 250, 220)
    result = FramingPolicy().judge([SUBJECT, half_out], W, H)
    assert "multiple_faces" not in codes(result)
    assert result.face == SUBJECT  # the central one, not the one cut by the border


def test_a_face_mostly_hidden_behind_the_subject_does_not_reject() -> None:
    behind = face(250, 230, 180)
    result = FramingPolicy().judge([SUBJECT, behind], W, H)
    assert "multiple_faces" not in codes(result)
    assert result.scores["presenting_faces"] == 1


def test_a_low_score_second_face_does_not_reject() -> None:
    result = FramingPolicy().judge([SUBJECT, face(20, 500, 200, score=0.85)], W, H)
    assert result.rejections == ()


def test_of_two_faces_of_similar_size_the_central_one_is_the_subject() -> None:
    side = face(380, 40, 225)  # slightly larger, off-centre
    result = FramingPolicy().judge([side, SUBJECT], W, H)
    assert result.face == SUBJECT


def test_too_small_message_carries_the_numbers() -> None:
    result = FramingPolicy().judge([face(200, 250, 52)], W, H)
    assert codes(result) == ["face_too_small"]
    assert result.rejections[0].detail == "The face is 52 px wide; at least 64 px is needed."
    tall = Face(200, 250, 80, 50, 0.99, face(200, 250, 60).landmarks)
    detail = FramingPolicy().judge([tall], W, H).rejections[0].detail
    assert detail == "The face is 50 px tall; at least 64 px is needed."


def test_a_small_far_face_is_fine_but_a_scene_is_not() -> None:
    far = face(250, 300, 120)  # 15 % of the image height, as at arm's length
    assert FramingPolicy().judge([far], W, H).rejections == ()
    scene = FramingPolicy().judge([face(1000, 1500, 100)], 2400, 3200)
    assert codes(scene) == ["face_too_small"]
    assert scene.rejections[0].detail == (
        "The face is 3.1% of the image height; at least 5.0% is needed."
    )


def test_cut_off_message_carries_the_overflow_and_the_limit() -> None:
    result = FramingPolicy().judge([face(200, -60, 220)], W, H)
    assert codes(result) == ["face_cut_off"]
    assert "past the image border; at most 10% is accepted" in result.rejections[0].detail


def test_no_face() -> None:
    result = FramingPolicy().judge([], W, H)
    assert codes(result) == ["no_face"]
    assert result.face is None


def test_far_face_smaller_than_near_passes_the_pair_rule() -> None:
    pair = near_far_framing(face(100, 100, 400), face(200, 200, 200))
    assert pair.rejections == ()
    assert pair.scores["far_to_near_face_size"] == 0.5


def test_far_face_clearly_larger_than_near_is_rejected_with_the_ratio() -> None:
    pair = near_far_framing(face(100, 100, 200), face(100, 100, 300))
    [rejection] = pair.rejections
    assert (rejection.code, rejection.subject) == ("face_too_small", "near_far_ratio")
    assert rejection.detail.startswith("The far face is 1.50 times the near face's size")


def test_pair_rule_compares_relative_sizes_when_image_sizes_are_given() -> None:
    # Same framing, far captured at twice the resolution: relative sizes are equal.
    pair = near_far_framing(face(0, 0, 200), face(0, 0, 400), (600, 800), (1200, 1600))
    assert pair.rejections == ()
    assert pair.scores["far_to_near_face_size"] == 1.0
