from __future__ import annotations

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from services.face_detector.model import detect_faces
from services.pad.model import WEIGHTS, PadHeuristics, lbp_entropy, moire_peakness
from shared.analysis import Face, Image, Model

CUES = {"moire", "specular", "texture", "color", "border"}


def screen_grid(image: Image, period: float, angle: float = 0.0, depth: float = 0.25) -> Image:
    """Multiply by a fine 2-D sinusoidal grid, like the pixel lattice of a filmed screen."""
    rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float64)
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    u, v = cols * c + rows * s, -cols * s + rows * c
    wave_u = 1 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * u / period))
    wave_v = 1 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * v / period))
    return np.clip(image * (wave_u * wave_v)[..., None], 0, 255).astype(np.uint8)


def held_up_photo(astronaut: Image, coffee: Image) -> Image:
    """A bordered print of a selfie held in front of another scene."""
    scene = cv2.resize(coffee, (1000, 800))
    print_ = cv2.copyMakeBorder(
        astronaut[0:300, 100:350], 10, 10, 10, 10, cv2.BORDER_CONSTANT, value=(240, 240, 235)
    )
    scene[250 : 250 + print_.shape[0], 350 : 350 + print_.shape[1]] = print_
    return scene


def test_implements_the_model_contract() -> None:
    model = PadHeuristics()
    assert isinstance(model, Model)
    assert model.key == "as_heuristics"
    assert model.info.name == "as_heuristics"
    assert set(WEIGHTS) == CUES


@pytest.mark.parametrize("name", ["astronaut", "tom_hanks"])
def test_real_faces_pass_with_margin(name: str, request: pytest.FixtureRequest) -> None:
    image, face = request.getfixturevalue(name), request.getfixturevalue(f"{name}_face")
    model = PadHeuristics()
    result = model.analyze(image, face)
    assert set(result.scores) == {"prob", *CUES}
    assert all(0.0 <= v <= 1.0 for v in result.scores.values())
    assert result.scores["prob"] < model.threshold - 0.3
    assert result.rejections == ()


def test_group_faces_pass(retinaface_session: ort.InferenceSession, group: Image) -> None:
    for face in detect_faces(retinaface_session, group, max_side=1280):
        assert PadHeuristics().analyze(group, face).scores["prob"] < 0.2


@pytest.mark.parametrize("period", [3.0, 4.0])
def test_screen_grid_raises_moire_and_fused_score(
    astronaut: Image, astronaut_face: Face, period: float
) -> None:
    model = PadHeuristics()
    original = model.analyze(astronaut, astronaut_face).scores
    gridded = model.analyze(screen_grid(astronaut, period), astronaut_face).scores
    assert original["moire"] == 0.0
    assert gridded["moire"] > 0.25
    assert gridded["prob"] > original["prob"] + 0.1


def test_rotated_screen_grid_is_rejected_as_spoof(astronaut: Image, astronaut_face: Face) -> None:
    result = PadHeuristics().analyze(screen_grid(astronaut, 3.0, angle=20.0), astronaut_face)
    assert result.scores["moire"] == 1.0
    assert [(r.code, r.subject) for r in result.rejections] == [("spoof_detected", "as_heuristics")]


def test_moire_peakness_separates_grid_from_natural_texture(astronaut: Image) -> None:
    gray = cv2.cvtColor(astronaut[50:200, 170:290], cv2.COLOR_RGB2GRAY).astype(np.float32)
    gridded = cv2.cvtColor(
        screen_grid(astronaut[50:200, 170:290], 3.0, angle=20.0), cv2.COLOR_RGB2GRAY
    )
    assert moire_peakness(gray) < 1.5
    assert moire_peakness(gridded.astype(np.float32)) > 3.0


def test_glare_patch_raises_specular(astronaut: Image, astronaut_face: Face) -> None:
    glared = astronaut.copy()
    cv2.ellipse(glared, (225, 85), (25, 12), 0, 0, 360, (250, 250, 250), -1)
    original = PadHeuristics().analyze(astronaut, astronaut_face).scores["specular"]
    assert original == 0.0
    assert PadHeuristics().analyze(glared, astronaut_face).scores["specular"] == 1.0


def test_lost_micro_texture_raises_texture(astronaut: Image, astronaut_face: Face) -> None:
    smooth = cv2.GaussianBlur(astronaut, (0, 0), 2.0)
    assert PadHeuristics().analyze(astronaut, astronaut_face).scores["texture"] == 0.0
    assert PadHeuristics().analyze(smooth, astronaut_face).scores["texture"] == 1.0


def test_lbp_entropy_bounds() -> None:
    flat = np.full((64, 64), 100, dtype=np.float32)
    noise = np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.float32)
    ramp = np.tile(np.arange(64, dtype=np.float32), (64, 1))
    assert lbp_entropy(flat) == 0.0
    assert lbp_entropy(ramp) < 0.1  # one pattern everywhere
    assert lbp_entropy(noise) > 0.7


def test_desaturated_face_raises_color_but_alone_does_not_reject(
    astronaut: Image, astronaut_face: Face
) -> None:
    grey = np.repeat(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)[..., None], 3, axis=2)
    result = PadHeuristics().analyze(grey, astronaut_face)
    assert result.scores["color"] == 1.0
    assert result.rejections == ()


def test_photo_edges_around_the_face_raise_border(
    retinaface_session: ort.InferenceSession, astronaut: Image, coffee: Image
) -> None:
    image = held_up_photo(astronaut, coffee)
    (face,) = detect_faces(retinaface_session, image)
    selfie = astronaut[0:300, 100:350].copy()
    (own,) = detect_faces(retinaface_session, selfie)
    assert PadHeuristics().analyze(selfie, own).scores["border"] == 0.0
    assert PadHeuristics().analyze(image, face).scores["border"] == 1.0


def test_works_without_a_face(astronaut: Image) -> None:
    result = PadHeuristics().analyze(astronaut, None)
    assert result.scores["border"] == 0.0
    assert result.rejections == ()


def test_threshold_is_configurable(astronaut: Image, astronaut_face: Face) -> None:
    gridded = screen_grid(astronaut, 3.0, angle=20.0)
    assert PadHeuristics().analyze(gridded, astronaut_face).rejections
    assert not PadHeuristics(threshold=0.99).analyze(gridded, astronaut_face).rejections
