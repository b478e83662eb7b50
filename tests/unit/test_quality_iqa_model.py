"""BRISQUE and NIQE against their reference code, on real and degraded faces; the stage."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
import skimage.color
from PIL import Image as PILImage

from services.quality.brisque import Brisque, brisque_features
from services.quality.model import ClassicMetrics
from services.quality.niqe import Niqe, Pristine, niqe_input, niqe_score
from services.quality.stage import build_models
from shared.analysis import Face, Image, Model, UnavailableModel
from shared.models_registry import BUNDLED_MANIFEST, Registry, load_manifest
from shared.settings import Settings


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return Registry(load_manifest(BUNDLED_MANIFEST), tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def brisque(registry: Registry) -> Brisque:
    return Brisque.from_files(
        registry.require("brisque", materialise_from_package=True),
        registry.require("brisque_range", materialise_from_package=True),
    )


@pytest.fixture(scope="module")
def pristine(registry: Registry) -> Pristine:
    return Pristine.load(registry.require("niqe", materialise_from_package=True))


def blurred(image: Image, sigma: float = 4.0) -> Image:
    return np.asarray(cv2.GaussianBlur(image, (0, 0), sigma), np.uint8)


def test_brisque_matches_the_packages_features_and_libsvm(
    brisque: Brisque, astronaut: Image
) -> None:
    from brisque import BRISQUE
    from libsvm import svmutil

    reference = BRISQUE(url=False)
    gray = skimage.color.rgb2gray(astronaut)
    half = cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = [
            *reference.calculate_brisque_features(gray, 7, 7 / 6),
            *reference.calculate_brisque_features(half, 7, 7 / 6),
        ]
    # Under NumPy 2 the package leaves some features as 1-element arrays: flatten them.
    features = np.array([float(np.ravel(f)[0]) for f in raw])
    assert brisque_features(astronaut) == pytest.approx(features, abs=1e-3)
    scaled = [float(v) for v in reference.scale_features(features)]
    nodes, _ = svmutil.gen_svm_nodearray(scaled, isKernel=False)
    expected = svmutil.libsvm.svm_predict(reference.model, nodes)
    assert brisque.score(astronaut) == pytest.approx(expected, abs=0.05)


@pytest.fixture
def skvideo_restored() -> Iterator[None]:
    """scikit-video's NIQE with the two APIs it needs and NumPy/SciPy removed, restored."""

    def imresize(
        arr: np.ndarray, size: float, interp: str = "bicubic", mode: str = "F"
    ) -> np.ndarray:
        image = PILImage.fromarray(arr, mode=mode)
        target = tuple((np.array(image.size) * size).astype(int))
        return np.asarray(image.resize(target, PILImage.Resampling.BICUBIC))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy.misc is deprecated, and empty nowadays
        import scipy.misc

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(np, "int", int, raising=False)
        patch.setattr(scipy.misc, "imresize", imresize, raising=False)
        yield


@pytest.mark.usefixtures("skvideo_restored")
def test_niqe_matches_scikit_videos_own_function(pristine: Pristine, astronaut: Image) -> None:
    import skvideo.measure

    for image in (astronaut, blurred(astronaut, 3.0)):
        gray = (image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])).astype(np.float32)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = float(skvideo.measure.niqe(gray)[0])
        assert niqe_score(image, pristine) == pytest.approx(expected, abs=0.02)


def test_blur_raises_brisque_on_the_face_crop(
    brisque: Brisque, astronaut: Image, astronaut_face: Face
) -> None:
    sharp_b = brisque.analyze(astronaut, astronaut_face).scores["score"]
    blur_b = brisque.analyze(blurred(astronaut), astronaut_face).scores["score"]
    assert sharp_b < 20 < 60 < blur_b


def test_niqe_is_reported_on_the_face_crop_and_not_judged_by_default(
    pristine: Pristine, astronaut: Image, astronaut_face: Face
) -> None:
    # On a 192 px face crop NIQE does not track blur (docs/models.md): reported only.
    result = Niqe(pristine).analyze(blurred(astronaut), astronaut_face)
    assert result.rejections == ()
    assert np.isfinite(result.scores["score"])


def test_thresholds_are_off_by_default_and_reject_when_set(
    brisque: Brisque, pristine: Pristine, astronaut: Image, astronaut_face: Face
) -> None:
    bad = blurred(astronaut)
    assert brisque.analyze(bad, astronaut_face).rejections == ()
    strict = Brisque(brisque.svr, brisque.low, brisque.high, max_score=50.0)
    [rejection] = strict.analyze(bad, astronaut_face).rejections
    assert (rejection.code, rejection.subject) == ("low_quality", "brisque")
    [rejection] = Niqe(pristine, max_score=5.0).analyze(bad, astronaut_face).rejections
    assert rejection.subject == "niqe"


def test_niqe_input_is_bounded_and_never_too_small(
    tom_hanks: Image, group: Image, astronaut: Image, astronaut_face: Face
) -> None:
    assert max(niqe_input(group).shape[:2]) == 512
    assert min(niqe_input(tom_hanks).shape[:2]) >= 193  # two 96 px patches per side
    # With a face: the face crop at two patches on its shorter side, whatever the image.
    assert min(niqe_input(astronaut, astronaut_face).shape[:2]) == 192


def test_classic_metrics_on_the_whole_image_report_without_judging(
    astronaut: Image, astronaut_face: Face
) -> None:
    face_model, image_model = ClassicMetrics(), ClassicMetrics.whole_image()
    bad = blurred(astronaut, 6.0)
    assert face_model.analyze(bad, astronaut_face).rejections
    result = image_model.analyze(bad, astronaut_face)
    assert result.rejections == ()
    assert image_model.key == "classic_metrics_image"
    # The whole 512x512 portrait differs from its face crop.
    whole = image_model.analyze(astronaut, astronaut_face).scores
    face = face_model.analyze(astronaut, astronaut_face).scores
    assert set(whole) == set(face)
    assert whole["brightness"] != pytest.approx(face["brightness"], abs=1.0)


def test_stage_builds_every_model_with_manifest_versions(tmp_path: Path) -> None:
    models: list[Model] = list(
        build_models(Settings(model_dir=tmp_path, model_manifest=BUNDLED_MANIFEST))
    )
    keys = [m.key for m in models]
    assert keys == ["classic_metrics", "classic_metrics_image", "brisque", "niqe", "liqe", "topiq"]
    manifest = load_manifest(BUNDLED_MANIFEST)
    for model in models:
        entry = manifest[model.info.name]
        assert model.info.version == entry.version
    assert all(isinstance(m, UnavailableModel) for m in models[4:])
    assert (tmp_path / "brisque_svm.txt").is_file()  # materialised from the package
