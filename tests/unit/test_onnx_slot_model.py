"""Production model slots: tiny ONNX models built here prove each slot loads, runs, records.

No production weights exist on this machine, so each test writes a small network with
onnx.helper whose output is a known function of its input, pins it in a manifest, and
checks the slot's preprocessing (crop, colour order, normalisation) and the recorded
score (model name and version from the manifest).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from etl.columns import analyst_row
from services.face_detector.scrfd import ScrfdDetector
from services.face_detector.stage import build_models as detector_models
from services.onnx_slot import InputSpec, OnnxScorer, OutputSpec
from services.pad.stage import build_models as pad_models
from services.quality.stage import build_models as quality_models
from shared.analysis import Face, Image, Model, ModelInfo, UnavailableModel
from shared.models_registry import BUNDLED_MANIFEST
from shared.onnx import build_session
from shared.pipeline import Policy, StageDefinition
from shared.pipeline import analyze_image as analyze
from shared.settings import Settings

_ANY_STAGE = StageDefinition(name="quality", build_models=lambda _: [], needs_face=False)


def analyze_image(
    models: Sequence[Model], image: Image, face: Face | None
) -> tuple[str, dict[str, Any], list[dict[str, Any]], Face | None, dict[str, float]]:
    """The production per-image analysis, unpacked for these tests."""
    result = analyze(_ANY_STAGE, models, image, face, Policy())
    record = result.record
    scores = {k: dict(v) for k, v in record.scores.items()}
    return (
        record.verdict,
        scores,
        [dict(r) for r in record.reasons],
        record.face,
        result.model_seconds,
    )


RED = (200, 50, 50)


def _save(graph: onnx.GraphProto, path: Path) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return hashlib.sha256(path.read_bytes()).hexdigest()


def two_class_model(path: Path) -> str:
    """logits = [0, mean(channel 0) - mean(channel 1)]: P(class 1) = sigmoid(c0 - c1)."""
    weights = numpy_helper.from_array(np.array([[0, 1], [0, -1], [0, 0]], np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "two_class",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 2])],
        initializer=[weights],
    )
    return _save(graph, path)


def channel_mean_model(path: Path) -> str:
    """One score: the mean of the first input channel."""
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Slice", ["pooled", "s0", "s1", "axis"], ["first"]),
            helper.make_node("Flatten", ["first"], ["score"]),
        ],
        "channel_mean",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
        initializer=[
            numpy_helper.from_array(np.array([0], np.int64), "s0"),
            numpy_helper.from_array(np.array([1], np.int64), "s1"),
            numpy_helper.from_array(np.array([1], np.int64), "axis"),
        ],
    )
    return _save(graph, path)


def pinned_manifest(tmp_path: Path, pins: dict[str, str]) -> Path:
    """The bundled manifest with the given models' sha256 pinned."""
    text = BUNDLED_MANIFEST.read_text()
    for name, digest in pins.items():
        pattern = rf'(name = "{name}"\n(?:(?!\[\[model\]\]).)*?sha256 = )""'
        text, count = re.subn(pattern, rf'\1"{digest}"', text, flags=re.S)
        assert count == 1, name
    path = tmp_path / "manifest.toml"
    path.write_text(text)
    return path


def uniform(colour: tuple[int, int, int], size: tuple[int, int] = (240, 320)) -> Image:
    image = np.empty((*size, 3), np.uint8)
    image[:] = colour
    return image


def a_face(x: float = 100, y: float = 60, side: float = 100) -> Face:
    marks = (
        (x + 30, y + 40),
        (x + 70, y + 40),
        (x + 50, y + 60),
        (x + 35, y + 80),
        (x + 65, y + 80),
    )
    return Face(x, y, side, side, 0.99, marks)


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


@pytest.fixture(scope="module")
def two_class(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("onnx") / "two_class.onnx"
    two_class_model(path)
    return path


def scorer(path: Path, spec: InputSpec, output: OutputSpec) -> OnnxScorer:
    session = build_session(path, Settings())
    return OnnxScorer(session, "slot", ModelInfo("slot", "1"), spec, output, value_name="prob")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (InputSpec(crop="image", size=(32, 32)), sigmoid(150 / 255)),
        # BGR puts blue first: blue and green are equal, so the logit is 0.
        (InputSpec(crop="image", size=(32, 32), color="BGR"), 0.5),
        (
            InputSpec(crop="image", size=(32, 32), mean=(0.5, 0, 0), std=(0.25, 1, 1)),
            sigmoid((200 / 255 - 0.5) / 0.25 - 50 / 255),
        ),
        # A 2x crop around a face in the image's corner: 0.75 x 0.75 of it is inside.
        (InputSpec(crop="face", crop_scale=2.0, size=(32, 32)), sigmoid(0.5625 * 150 / 255)),
    ],
)
def test_preprocessing_follows_the_spec(two_class: Path, spec: InputSpec, expected: float) -> None:
    model = scorer(two_class, spec, OutputSpec("softmax", 1))
    face = Face(0, 0, 100, 100, 0.99, ())
    assert model.analyze(uniform(RED), face).scores["prob"] == pytest.approx(expected, abs=1e-4)


def test_pad_slot_loads_from_the_model_dir_runs_and_records(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    digest = two_class_model(model_dir / "as_35_selfies.onnx")
    settings = Settings(
        model_dir=model_dir, model_manifest=pinned_manifest(tmp_path, {"as_35_selfies": digest})
    )
    models = pad_models(settings)
    slot = next(m for m in models if m.key == "as_35_selfies")
    assert isinstance(slot, OnnxScorer)
    assert all(isinstance(m, UnavailableModel) for m in models if m.key.startswith("ibeta2"))

    verdict, scores, reasons, _, _ = analyze_image(models, uniform(RED), a_face())
    entry = scores["as_35_selfies"]
    # The manifest's spec: whole image, RGB, ImageNet mean/std; softmax class 1.
    logit = (200 / 255 - 0.485) / 0.229 - (50 / 255 - 0.456) / 0.224
    assert entry["values"]["prob"] == pytest.approx(sigmoid(logit), abs=1e-4)
    assert (entry["model"], entry["version"], entry["status"]) == (
        "as_35_selfies",
        "as_35_selfies",
        "ok",
    )
    assert entry["time_ms"] is not None and entry["time_ms"] > 0
    assert verdict == "reject"
    assert {(r["code"], r["subject"]) for r in reasons} >= {("spoof_detected", "as_35_selfies")}
    assert scores["ibeta2_crops"]["status"] == "not_run"


def test_quality_slot_score_reaches_the_analysts_column(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    digest = channel_mean_model(model_dir / "liqe.onnx")
    settings = Settings(
        model_dir=model_dir, model_manifest=pinned_manifest(tmp_path, {"liqe": digest})
    )
    models = quality_models(settings)
    _, scores, _, _, _ = analyze_image(models, uniform(RED), a_face())
    assert scores["liqe"]["values"]["score"] == pytest.approx(200 / 255, abs=1e-4)
    assert scores["liqe"]["version"] == "pyiqa-liqe_mix"
    assert scores["topiq"]["status"] == "not_run"
    doc = {"stages": {"quality": {"near": {"scores": scores}}}}
    assert analyst_row(doc)["score_liqe_near_img"] == scores["liqe"]["values"]["score"]


def scrfd_model(path: Path, hit: tuple[int, int, int], score: float = 0.9) -> str:
    """Nine constant outputs: one face at (stride, row, col), anchor 0, all else empty.

    Box distances (2, 3, 4, 5) strides; keypoints at fixed stride offsets.
    """
    nodes, outputs = [], []
    stride_hit, row, col = hit
    tensors: dict[str, np.ndarray] = {}
    for stride in (8, 16, 32):
        cells = (640 // stride) ** 2 * 2
        scores = np.zeros((cells, 1), np.float32)
        boxes = np.zeros((cells, 4), np.float32)
        kps = np.zeros((cells, 10), np.float32)
        if stride == stride_hit:
            index = (row * (640 // stride) + col) * 2
            scores[index] = score
            boxes[index] = (2, 3, 4, 5)
            kps[index] = (-1, -1, 1, -1, 0, 0, -0.8, 1, 0.8, 1)
        tensors[f"score_{stride}"] = scores
        tensors[f"bbox_{stride}"] = boxes
        tensors[f"kps_{stride}"] = kps
    for name in [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in (8, 16, 32)]:
        value = tensors[name]
        nodes.append(
            helper.make_node(
                "Constant", [], [name], value=numpy_helper.from_array(value, name + "_v")
            )
        )
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(
        nodes,
        "scrfd_stub",
        [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, 640, 640])],
        outputs,
    )
    return _save(graph, path)


def test_scrfd_slot_decodes_boxes_and_keypoints_and_replaces_retinaface(tmp_path: Path) -> None:
    model_dir = tmp_path / "models"
    digest = scrfd_model(model_dir / "scrfd_10g.onnx", hit=(16, 10, 20))
    settings = Settings(
        model_dir=model_dir, model_manifest=pinned_manifest(tmp_path, {"scrfd_10g": digest})
    )
    detector, pose = detector_models(settings)
    assert isinstance(detector, ScrfdDetector)
    assert (detector.info.name, detector.info.version) == ("scrfd_10g", "buffalo_l-det_10g")
    # A 1280x960 image is halved to fit 640x640: network pixels map back times two.
    verdict, scores, reasons, face, _ = analyze_image(
        [detector, pose], uniform(RED, (960, 1280)), None
    )
    assert verdict == "pass", reasons
    assert face is not None
    # Anchor centre (20 * 16, 10 * 16) = (320, 160); box (-2, -3, +4, +5) strides.
    assert (face.x, face.y, face.width, face.height) == pytest.approx((576, 224, 192, 256))
    assert face.landmarks[0] == pytest.approx((608, 288))
    assert face.landmarks[2] == pytest.approx((640, 320))
    assert scores["face_detector"]["model"] == "scrfd_10g"
    assert scores["head_pose"]["values"]["yaw"] == pytest.approx(0.0, abs=1e-6)


def four_label_model(path: Path) -> str:
    """Logits (10, -10, -10, -10) x mean(channel 0): only the first label fires."""
    weights = np.zeros((3, 4), np.float32)
    weights[0] = (10, -10, -10, -10)
    graph = helper.make_graph(
        [
            helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
            helper.make_node("Flatten", ["pooled"], ["flat"]),
            helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        ],
        "four_labels",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    return _save(graph, path)


NEW_PAD_MODEL = """
[[model]]
name = "pad_newcomer"
task = "pad"
stage = "pad"
version = "nc-1"
file = "pad_newcomer.onnx"
sha256 = "{digest}"
licence = "test"
source = {{ kind = "operator" }}
input = {{ crop = "image", size = [32, 32], color = "RGB" }}
output = {{ kind = "softmax", index = 1 }}
[model.scorer]
value = "prob"
reject = "above"
code = "spoof_detected"
threshold = 0.9
fused = true
"""


def test_a_scorer_model_added_to_the_manifest_alone_runs_is_judged_fused_and_gets_columns(
    tmp_path: Path,
) -> None:
    from etl.columns import scorer_columns
    from services.pad.stage import fused_models
    from shared.models_registry import load_manifest

    model_dir = tmp_path / "models"
    digest = two_class_model(model_dir / "pad_newcomer.onnx")
    manifest = tmp_path / "manifest.toml"
    manifest.write_text(BUNDLED_MANIFEST.read_text() + NEW_PAD_MODEL.format(digest=digest))
    settings = Settings(model_dir=model_dir, model_manifest=manifest)

    slot = next(m for m in pad_models(settings) if m.key == "pad_newcomer")
    assert isinstance(slot, OnnxScorer)
    # The manifest's threshold: RED scores sigmoid((200 - 50) / 255) ~ 0.64, under 0.9.
    verdict, scores, _, _, _ = analyze_image([slot], uniform(RED), a_face())
    assert scores["pad_newcomer"]["values"]["prob"] == pytest.approx(sigmoid(150 / 255), 1e-4)
    assert (verdict, scores["pad_newcomer"]["version"]) == ("pass", "nc-1")
    # The nested per-model setting replaces it, by the model's manifest name.
    stricter = Settings(model_dir=model_dir, model_manifest=manifest,
                        models={"pad_newcomer": {"threshold": 0.5}})  # fmt: skip
    slot = next(m for m in pad_models(stricter) if m.key == "pad_newcomer")
    assert analyze_image([slot], uniform(RED), a_face())[0] == "reject"

    # Its probability joins the near/far fused probability.
    assert "pad_newcomer" in fused_models(manifest)
    assert "pad_newcomer" not in fused_models(BUNDLED_MANIFEST)

    # And the analysts' extract has its score and time per image.
    names = [c.name for c in scorer_columns(load_manifest(manifest), set())]
    expected = {f"{kind}_pad_newcomer_{side}_img" for kind in ("prob", "time_ms")
                for side in ("near", "far")}  # fmt: skip
    assert expected <= set(names)
    column = next(c for c in scorer_columns(load_manifest(manifest), set())
                  if c.name == "prob_pad_newcomer_far_img")  # fmt: skip
    doc = {"stages": {"pad": {"far": {"scores": {"pad_newcomer": {"values": {"prob": 0.25}}}}}}}
    assert column.get(doc) == 0.25


def test_the_bundled_scorer_models_keep_the_analysts_columns_and_add_none() -> None:
    from etl.columns import ANALYST_COLUMNS, COLUMNS, EXTRA_COLUMNS
    from shared.models_registry import load_manifest

    scorers = {e.name for e in load_manifest(BUNDLED_MANIFEST) if e.scorer is not None}
    assert scorers == {"liqe", "topiq", "as_35_selfies", "ibeta2_crops", "ibeta2_full",
                       "ibeta2_clip"}  # fmt: skip
    assert len(COLUMNS) == len(ANALYST_COLUMNS) + len(EXTRA_COLUMNS)
