"""MiniFASNet: upstream's crop geometry, the fusion, the torch-free converter and the stage.

Tests that need the upstream weights read them from `<repo>/../shared/models/minifasnet`
and skip with a message when they are absent; the torch parity test also needs
`pip install torch==2.13.0` (the `convert` extra).
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from services.pad.minifasnet import (
    CropModel,
    MiniFASNet,
    context_of,
    crop_box,
    crop_input,
    fuse,
    softmax,
)
from shared.analysis import Face, ModelInfo, UnavailableModel
from shared.models_registry import BUNDLED_MANIFEST, Registry, load_manifest, materialise
from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
WEIGHTS = REPO.parent / "shared" / "models" / "minifasnet"
FILES = {
    "minifasnet_v2": "2.7_80x80_MiniFASNetV2.pth",
    "minifasnet_v1se": "4_0_0_80x80_MiniFASNetV1SE.pth",
}


def face(x: float, y: float, w: float, h: float) -> Face:
    return Face(x, y, w, h, 0.99, ())


def weights(name: str) -> Path:
    path = WEIGHTS / FILES[name]
    if not path.is_file():
        pytest.skip(f"MiniFASNet upstream weights not found: {path}")
    if importlib.util.find_spec("onnx") is None:
        pytest.skip("onnx is not installed (the `convert` or `dev` extra)")
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Both networks converted and verified through the registry, in a fresh model dir."""
    for name in FILES:
        weights(name)
    model_dir = tmp_path_factory.mktemp("models")
    manifest = load_manifest(BUNDLED_MANIFEST)
    for name in FILES:
        materialise(manifest[name], model_dir, source_dir=WEIGHTS.parent)
    return model_dir


# --- crop geometry (upstream CropImage) -----------------------------------------------------


def test_the_crop_is_the_box_enlarged_around_its_centre_when_it_fits() -> None:
    # 100x100 box centred at (500, 500) in a 1000x1000 image: x2.7 -> 270 wide.
    assert crop_box(1000, 1000, face(450, 450, 100, 100), 2.7) == (365, 365, 635, 635)


def test_the_crop_is_shifted_back_inside_the_image_not_clipped() -> None:
    # Box near the left edge: the 270 px crop keeps its size and starts at 0.
    left, _top, right, _bottom = crop_box(1000, 1000, face(10, 450, 100, 100), 2.7)
    assert (left, right - left) == (0, 270)
    # Near the bottom-right corner: it ends at the last pixel.
    left, _top, right, bottom = crop_box(1000, 800, face(880, 680, 100, 100), 2.7)
    assert (right, bottom) == (999, 799) and right - left == 270


def test_the_scale_shrinks_until_the_crop_fits_the_image() -> None:
    # A 200 px face in a 300x400 image: at most 299/200 = 1.495 times the box.
    left, _top, right, _bottom = crop_box(300, 400, face(50, 100, 200, 200), 4.0)
    assert right - left == pytest.approx(299, abs=1)
    assert context_of(300, 400, face(50, 100, 200, 200)) == pytest.approx(1.495)


def test_the_network_input_is_bgr_float_0_255_nchw_80x80() -> None:
    image = np.zeros((400, 400, 3), np.uint8)
    image[..., 0] = 200  # red
    tensor = crop_input(image, face(150, 150, 100, 100), 2.7)
    assert tensor.shape == (1, 3, 80, 80) and tensor.dtype == np.float32
    assert tensor[0, 2].max() == 200.0 and tensor[0, 0].max() == 0.0


# --- fusion ---------------------------------------------------------------------------------


def test_fusion_averages_the_real_face_probability_of_the_two_networks() -> None:
    a, b = np.array([0.1, 0.8, 0.1]), np.array([0.5, 0.2, 0.3])
    assert fuse([a, b]) == pytest.approx(0.5)
    assert softmax(np.array([0.0, 0.0, np.log(2.0)])) == pytest.approx([0.25, 0.25, 0.5])


class _FixedSession:
    """Stands in for an ONNX session: always the same logits."""

    def __init__(self, logits: list[float]) -> None:
        self.logits = np.asarray([logits], np.float32)

    def get_inputs(self) -> list[object]:
        return [type("Input", (), {"name": "input"})()]

    def run(self, _: object, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        assert feeds["input"].shape == (1, 3, 80, 80)
        return [self.logits]


def _model(live_logits: tuple[float, float], threshold: float = 0.5) -> MiniFASNet:
    crops = [
        CropModel(name, scale, _FixedSession([0.0, logit, 0.0]), ModelInfo(name, "t"))
        for (name, scale), logit in zip(
            (("minifasnet_v2", 2.7), ("minifasnet_v1se", 4.0)), live_logits, strict=True
        )
    ]
    return MiniFASNet(models=crops, threshold=threshold, info=ModelInfo("minifasnet", "t"))


def test_rejects_as_spoof_when_the_fused_spoof_probability_reaches_the_threshold() -> None:
    image = np.zeros((600, 600, 3), np.uint8)
    result = _model((-5.0, -5.0)).analyze(image, face(250, 250, 100, 100))
    assert result.scores["spoof"] == pytest.approx(2 / (2 + np.exp(-5.0)))
    assert result.scores["prob"] == result.scores["spoof"]
    assert [(r.code, r.subject) for r in result.rejections] == [("spoof_detected", "minifasnet")]
    assert not _model((5.0, 5.0)).analyze(image, face(250, 250, 100, 100)).rejections


def test_a_tight_face_crop_is_recorded_as_not_assessed_and_never_rejected() -> None:
    image = np.zeros((120, 100, 3), np.uint8)
    result = _model((-5.0, -5.0)).analyze(image, face(5, 5, 90, 110))
    assert result.scores["assessed"] == 0.0 and result.scores["context"] < 1.5
    assert result.rejections == ()
    assert "too little surround" in str(result.details["not_assessed"])


# --- converter and registry -----------------------------------------------------------------


def test_the_conversion_is_deterministic_and_matches_the_manifest(converted: Path) -> None:
    from tools.convert.minifasnet import convert

    manifest = load_manifest(BUNDLED_MANIFEST)
    for name, file in FILES.items():
        data = convert(WEIGHTS / file)
        assert data == convert(WEIGHTS / file)
        assert hashlib.sha256(data).hexdigest() == manifest[name].sha256
        assert (converted / str(manifest[name].file)).read_bytes() == data


def test_the_converter_refuses_a_pickle_that_carries_code(tmp_path: Path) -> None:
    import pickle

    from tools.convert.minifasnet import read_state_dict

    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(print))  # a global in the header record
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        read_state_dict(evil)


def test_the_registry_refuses_an_upstream_file_with_another_checksum(tmp_path: Path) -> None:
    from shared.models_registry import ModelNotReady

    (tmp_path / "minifasnet").mkdir()
    (tmp_path / "minifasnet" / FILES["minifasnet_v2"]).write_bytes(b"not the weights")
    entry = load_manifest(BUNDLED_MANIFEST)["minifasnet_v2"]
    with pytest.raises(ModelNotReady, match="not the upstream file"):
        materialise(entry, tmp_path / "models", source_dir=tmp_path)
    assert not (tmp_path / "models" / str(entry.file)).exists()


def test_the_onnx_export_matches_the_torch_reference(converted: Path) -> None:
    if importlib.util.find_spec("torch") is None:
        pytest.skip("torch is not installed: `pip install torch==2.13.0` (the `convert` extra)")
    import onnxruntime as ort

    from tools.convert import minifasnet_torch

    batch = np.random.default_rng(0).uniform(0, 255, (4, 3, 80, 80)).astype(np.float32)
    manifest = load_manifest(BUNDLED_MANIFEST)
    for name, file in FILES.items():
        session = ort.InferenceSession(str(converted / str(manifest[name].file)))
        logits = session.run(None, {"input": batch})[0]
        ours = np.stack([softmax(row) for row in logits])
        reference = minifasnet_torch.softmax(WEIGHTS / file, batch)
        assert np.abs(ours - reference).max() < 1e-4


# --- the stage ------------------------------------------------------------------------------


def test_the_stage_records_minifasnet_as_not_run_without_its_files(tmp_path: Path) -> None:
    from services.pad.stage import minifasnet

    settings = Settings(model_dir=tmp_path, model_manifest=BUNDLED_MANIFEST)
    model = minifasnet(settings, Registry.from_settings(settings))
    assert isinstance(model, UnavailableModel)
    assert model.key == "minifasnet" and "faceval models pull" in model.reason


def test_a_real_photo_scores_live_on_the_converted_weights(
    converted: Path, astronaut: np.ndarray, astronaut_face: Face
) -> None:
    from services.pad.stage import minifasnet

    settings = Settings(model_dir=converted, model_manifest=BUNDLED_MANIFEST)
    model = minifasnet(settings, Registry.from_settings(settings))
    assert isinstance(model, MiniFASNet)
    result = model.analyze(astronaut, astronaut_face)
    assert result.scores["assessed"] == 1.0
    assert result.scores["live"] > 0.5 and result.rejections == ()
