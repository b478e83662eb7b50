"""The analysts' columns, read off a transaction document: one function, one definition.

The first block is exactly the analysts' list, in their order; columns this project adds
follow with the same naming pattern. A stage or model that did not run gives None (null),
never 0: early termination is not zero time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.analysis import IMAGE_SIDES
from shared.models_registry import BUNDLED_MANIFEST, Manifest, load_manifest

Getter = Callable[[Mapping[str, Any]], Any]


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    description: str
    get: Getter


def _path(doc: Mapping[str, Any], *keys: str) -> Any:
    node: Any = doc
    for key in keys:
        if not isinstance(node, Mapping):
            return None
        node = node.get(key)
    return node


def _top(field: str) -> Getter:
    return lambda doc: doc.get(field)


def _image_size(img: str, dim: str) -> Getter:
    return lambda doc: _path(doc, "images", img, dim)


def _stage(stage: str, img: str, field: str) -> Getter:
    return lambda doc: _path(doc, "stages", stage, img, field)


def _model_value(stage: str, img: str, model: str, value: str) -> Getter:
    return lambda doc: _path(doc, "stages", stage, img, "scores", model, "values", value)


def _pair_score(stage: str, value: str) -> Getter:
    return lambda doc: _path(doc, "stages", stage, "decision", "pair_scores", value)


def _model_time(stage: str, img: str, model: str) -> Getter:
    return lambda doc: _path(doc, "stages", stage, img, "scores", model, "time_ms")


def _model_queue(stage: str, img: str, model: str) -> Getter:
    # Models of one stage share its job, so a model's queue time is the job's, when it ran.
    def get(doc: Mapping[str, Any]) -> Any:
        if _path(doc, "stages", stage, img, "scores", model, "status") != "ok":
            return None
        return _path(doc, "stages", stage, img, "queue_time_ms")

    return get


def _per_image(
    build: Callable[[str, str], list[Column]],
) -> list[Column]:
    """Expand one analysts' row: its near_img columns, then its far_img columns."""
    return [col for img in IMAGE_SIDES for col in build(img, f"{img}_img")]


def _score(stage: str, model: str, value: str, label: str, what: str) -> list[Column]:
    def build(img: str, tag: str) -> list[Column]:
        return [Column(f"{label}_{tag}", "double", what, _model_value(stage, img, model, value))]

    return _per_image(build)


def _times(stage: str, model: str | None, label: str, queue: bool = True) -> list[Column]:
    def build(img: str, tag: str) -> list[Column]:
        if model is None:
            run, wait = _stage(stage, img, "time_ms"), _stage(stage, img, "queue_time_ms")
        else:
            run, wait = _model_time(stage, img, model), _model_queue(stage, img, model)
        cols = [Column(f"time_ms_{label}_{tag}", "ms", f"{label} execution time", run)]
        if queue:
            cols.append(Column(f"queue_time_ms_{label}_{tag}", "ms", f"{label} queue time", wait))
        return cols

    return _per_image(build)


CLASSIC = ("sharpness", "colorfulness", "contrast", "brightness", "blur_score", "svd_score")
PAD_MODELS = ("as_35_selfies", "ibeta2_crops", "ibeta2_full", "ibeta2_clip", "as_heuristics")

ANALYST_COLUMNS: list[Column] = [
    Column("api_hash", "string", "API version of the gateway that served it", _top("api_hash")),
    Column("user_name", "string", "end user (keyed hash)", _top("user_name")),
    Column("file_token", "string", "unique identifier of the transaction", _top("file_token")),
    Column("service", "string", "API endpoint consumed", _top("service")),
    Column("summary_code", "int", "summary response code", _top("summary_code")),
    Column("summary_status", "string", "summary status", _top("summary_status")),
    Column("summary_desc", "string", "summary description", _top("summary_desc")),
    Column("http_code", "int", "HTTP code of the transaction", _top("http_code")),
    Column("total_time_ms", "ms", "total transaction time", _top("total_time_ms")),
    Column("date", "datetime", "date and time of the transaction", _top("created_at")),
    Column("procesoConvenioGuid", "string", "client's agreement process GUID",
           _top("procesoConvenioGuid")),
    Column("convenio", "string", "agreement (client) id", _top("convenio")),
    Column("documento", "string", "end user's document id (keyed hash)", _top("documento")),
    *_per_image(lambda img, tag: [
        Column(f"img_size_{tag}_{dim}", "px", f"image {dim}", _image_size(img, dim))
        for dim in ("width", "height")
    ]),
    *_per_image(lambda img, tag: [
        Column(f"score_liqe_{tag}", "double", "LIQE quality score",
               _model_value("quality", img, "liqe", "score")),
        Column(f"score_topiq_{tag}", "double", "TOPIQ quality score",
               _model_value("quality", img, "topiq", "score")),
    ]),
    *[col for metric in CLASSIC for col in _score(
        "quality", "classic_metrics", metric, f"score_{metric}_classic_metrics",
        f"classic {metric}")],
    *_per_image(lambda img, tag: [
        Column(f"prob_{model}_{tag}", "double", f"PAD {model} probability",
               _model_value("pad", img, model, "prob")) for model in PAD_MODELS[:1]
    ]),
    *_per_image(lambda img, tag: [
        Column(f"prob_{model}_{tag}", "double", f"PAD {model} probability",
               _model_value("pad", img, model, "prob")) for model in PAD_MODELS[1:4]
    ]),
    *_score("pad", "as_heuristics", "prob", "prob_as_heuristics", "heuristic PAD probability"),
    *_times("face_detector", None, "face_detector"),
    *_times("accessory", None, "accessory_detector"),
    *_times("quality", "liqe", "liqe"),
    *_times("quality", "topiq", "topiq"),
    *_times("quality", "classic_metrics", "classic_metrics", queue=False),
    *[col for model in PAD_MODELS[:4] for col in _times("pad", model, model)],
]  # fmt: skip

EXTRA_COLUMNS: list[Column] = [
    Column("summary_reason", "string", "summary reason code", _top("summary_reason")),
    Column("decided_by", "string", "stage that ended it (null when accepted)", _top("decided_by")),
    *_times("quality", None, "quality"),
    *_times("identity", None, "identity"),
    *_times("pad", None, "pad"),
    *_times("pad", "as_heuristics", "as_heuristics"),
    *[col for value in ("face_count", "face_score", "face_width_px", "face_height_px",
                        "face_area_ratio")
      for col in _score("face_detector", "face_detector", value,
                        f"score_{value}_face_detector", f"face detector {value}")],
    *[col for value in ("sunglasses", "glasses", "face_mask", "hat")
      for col in _score("accessory", "accessory_detector", value,
                        f"score_{value}_accessory_detector", f"{value} score")],
    *[col for value in ("moire", "specular", "texture", "color", "border")
      for col in _score("pad", "as_heuristics", value, f"score_{value}_as_heuristics",
                        f"PAD heuristic {value} component")],
    # Models from the model registry: head pose, whole-image classic metrics, BRISQUE,
    # NIQE, the per-image PAD geometry and the pad stage's near/far pair scores.
    *[col for value in ("yaw", "pitch", "roll")
      for col in _score("face_detector", "head_pose", value, f"score_{value}_head_pose",
                        f"head {value} in degrees (five-landmark estimate)")],
    *_times("face_detector", "head_pose", "head_pose", queue=False),
    *[col for value in ("sunglasses", "glasses", "face_mask", "hat")
      for col in _score("accessory", "accessory_classifier", value,
                        f"score_{value}_accessory_classifier", f"{value} (ONNX classifier)")],
    *[col for metric in CLASSIC
      for col in _score("quality", "classic_metrics_image", metric,
                        f"score_{metric}_classic_metrics_image", f"classic {metric}, whole image")],
    *_times("quality", "classic_metrics_image", "classic_metrics_image", queue=False),
    *_score("quality", "brisque", "score", "score_brisque", "BRISQUE of the face (lower: better)"),
    *_times("quality", "brisque", "brisque", queue=False),
    *_score("quality", "niqe", "score", "score_niqe", "NIQE of the image (lower: better)"),
    *_times("quality", "niqe", "niqe", queue=False),
    *[col for value in ("iod_ratio", "distance_mm")
      for col in _score("pad", "pad_geometry", value, f"score_{value}_pad_geometry",
                        f"face geometry {value}")],
    *[Column(f"score_{value}_pad_pair", "double", f"near/far {value}",
             _pair_score("pad", value))
      for value in ("geometry_observed_change", "geometry_expected_change",
                    "geometry_informative", "geometry_flatness")],
    # Identity: near vs far similarity and the threshold it was compared with (face_mismatch).
    Column("score_identity_similarity", "double", "near/far face similarity (cosine)",
           _pair_score("identity", "similarity")),
    Column("score_identity_threshold", "double", "same-person threshold applied",
           _pair_score("identity", "threshold")),
    *_times("identity", "dlib_resnet_v1", "dlib_resnet_v1", queue=False),
    # MiniFASNet (V2 + V1SE fused as upstream): spoof probability, and whether the image
    # gave it enough context to judge (tight crops are not assessed).
    *_score("pad", "minifasnet", "prob", "prob_minifasnet", "MiniFASNet spoof probability"),
    *_score("pad", "minifasnet", "assessed", "score_assessed_minifasnet",
            "1 when MiniFASNet could judge the image, 0 when it declined (tight crop)"),
    *_times("pad", "minifasnet", "minifasnet", queue=False),
    Column("prob_pad_fused", "double", "fused near/far spoof probability (report-only default)",
           _pair_score("pad", "fused_prob")),
]  # fmt: skip


def scorer_columns(manifest: Manifest, taken: set[str]) -> list[Column]:
    """Per scorer model of the manifest (a `scorer` table): its score and its execution
    time per image, named as the analysts' pattern (`prob_<model>_near_img`,
    `score_<model>_near_img`, `time_ms_<model>_near_img`), unless a column already has
    the name. A model added to the manifest gets its columns with no edit here."""
    columns: list[Column] = []
    for entry in manifest:
        if entry.scorer is None:
            continue
        stage, name, value = entry.stage, entry.name, entry.scorer.value
        what = f"{name} {value} ({entry.task})"
        columns += _score(stage, name, value, f"{value}_{name}", what)
        columns += _times(stage, name, name, queue=False)
    return [c for c in columns if c.name not in taken]


_FIXED: list[Column] = [*ANALYST_COLUMNS, *EXTRA_COLUMNS]
#: The code's own manifest, not the deployment's model directory: the columns are a
#: contract with the analysts and the warehouse schema, fixed by the code that is deployed.
_MANIFEST = load_manifest(BUNDLED_MANIFEST)
SCORER_ENTRIES = [e for e in _MANIFEST if e.scorer is not None]
COLUMNS: list[Column] = [*_FIXED, *scorer_columns(_MANIFEST, {c.name for c in _FIXED})]
COLUMN_NAMES: list[str] = [c.name for c in COLUMNS]


def analyst_row(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten one transaction document into the analysts' columns (in order)."""
    return {column.name: column.get(doc) for column in COLUMNS}
