"""A model slot for a production ONNX scorer (LIQE, TOPIQ, the PAD models).

The registry says which file to load and verifies it; the manifest entry's `input` and
`output` tables say how the exported network wants its input and what its output means,
so a new export is a manifest edit, not a code change:

- input.crop "face": a square of `crop_scale` x the larger side of the detector's box,
  centred on the box, zero-padded where it leaves the image; "image": the whole image.
  Without a face, "face" falls back to the whole image.
- input.size [width, height]; input.color "RGB" or "BGR"; then x * scale, (x - mean) / std
  per channel, NCHW float32 (input.layout "NHWC" for channels-last exports).
- output.kind "softmax" (probability of class `index`), "sigmoid" (one logit),
  "probability" (already in [0, 1]), "score" (a raw quality score, reported as is) or
  "multilabel" (one logit per name in `labels`, each through a sigmoid: e.g. an
  accessory classifier's sunglasses, glasses, face_mask, hat).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import cv2
import numpy as np
import onnxruntime as ort
from numpy.typing import NDArray

from shared.analysis import Face, Image, ModelInfo, ModelResult, Rejection

FloatArray = NDArray[np.float32]
OutputKind = Literal["softmax", "sigmoid", "probability", "score", "multilabel"]
_OUTPUT_KINDS = ("softmax", "sigmoid", "probability", "score", "multilabel")


def _floats(value: Any, default: Sequence[float]) -> tuple[float, float, float]:
    items = [float(v) for v in (value if value is not None else default)]
    if len(items) != 3:
        raise ValueError(f"expected three per-channel values, got {items}")
    return items[0], items[1], items[2]


@dataclass(frozen=True)
class InputSpec:
    size: tuple[int, int] = (224, 224)
    crop: Literal["face", "image"] = "face"
    crop_scale: float = 1.0
    color: Literal["RGB", "BGR"] = "RGB"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def from_manifest(cls, table: Mapping[str, Any]) -> InputSpec:
        default = cls()
        width, height = (int(v) for v in table.get("size", default.size))
        crop = str(table.get("crop", default.crop))
        color = str(table.get("color", default.color))
        layout = str(table.get("layout", default.layout))
        if crop not in ("face", "image") or color not in ("RGB", "BGR"):
            raise ValueError(f"bad input spec {dict(table)}")
        if layout not in ("NCHW", "NHWC"):
            raise ValueError(f"bad input layout {layout!r}")
        return cls(
            size=(width, height),
            crop=crop,  # type: ignore[arg-type]
            crop_scale=float(table.get("crop_scale", default.crop_scale)),
            color=color,  # type: ignore[arg-type]
            layout=layout,  # type: ignore[arg-type]
            scale=float(table.get("scale", default.scale)),
            mean=_floats(table.get("mean"), default.mean),
            std=_floats(table.get("std"), default.std),
        )


@dataclass(frozen=True)
class OutputSpec:
    kind: OutputKind = "score"
    index: int = 1
    labels: tuple[str, ...] = ()

    @classmethod
    def from_manifest(cls, table: Mapping[str, Any]) -> OutputSpec:
        kind = str(table.get("kind", "score"))
        labels = tuple(str(v) for v in table.get("labels", ()))
        if kind not in _OUTPUT_KINDS or (kind == "multilabel") != bool(labels):
            raise ValueError(f"bad output spec {dict(table)} (multilabel needs labels)")
        return cls(kind=kind, index=int(table.get("index", 1)), labels=labels)  # type: ignore[arg-type]


def square_crop(image: Image, face: Face, scale: float) -> Image:
    """`scale` x the larger box side, centred on the box, zero-padded past the border."""
    side = max(1, round(max(face.width, face.height) * scale))
    cx, cy = face.x + face.width / 2, face.y + face.height / 2
    x0, y0 = math.floor(cx - side / 2), math.floor(cy - side / 2)
    out = np.zeros((side, side, 3), dtype=np.uint8)
    height, width = image.shape[:2]
    sx0, sy0 = max(0, x0), max(0, y0)
    sx1, sy1 = min(width, x0 + side), min(height, y0 + side)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def prepare(image: Image, face: Face | None, spec: InputSpec) -> FloatArray:
    """The network input for one image, as the spec describes (batch of one)."""
    region = square_crop(image, face, spec.crop_scale) if spec.crop == "face" and face else image
    interp = cv2.INTER_AREA if region.shape[1] > spec.size[0] else cv2.INTER_LINEAR
    resized = np.asarray(cv2.resize(region, spec.size, interpolation=interp), np.uint8)
    if spec.color == "BGR":
        resized = resized[:, :, ::-1]
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    x: FloatArray = (resized.astype(np.float32) * np.float32(spec.scale) - mean) / std
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)


def interpret_labels(raw: NDArray[Any], spec: OutputSpec) -> dict[str, float]:
    """A multilabel output: one sigmoid probability per label."""
    values = np.asarray(raw, dtype=np.float64).reshape(-1)
    if values.size != len(spec.labels):
        raise ValueError(f"{len(spec.labels)} labels but {values.size} outputs")
    return {
        label: float(1.0 / (1.0 + np.exp(-v))) for label, v in zip(spec.labels, values, strict=True)
    }


def interpret(raw: NDArray[Any], spec: OutputSpec) -> float:
    values = np.asarray(raw, dtype=np.float64).reshape(-1)
    if spec.kind == "softmax":
        shifted = np.exp(values - values.max())
        return float(shifted[spec.index] / shifted.sum())
    if values.size != 1:
        raise ValueError(f"a {spec.kind} output has one value, got {values.size}")
    if spec.kind == "sigmoid":
        return float(1.0 / (1.0 + math.exp(-values[0])))
    return float(values[0])


@dataclass
class OnnxScorer:
    """One production ONNX model: preprocess per its spec, run, record one score.

    Scores are stored under `value_name`: "prob" for PAD slots (the analysts' columns
    read `prob_<model>`), "score" for quality. `reject_above` / `reject_below` set a
    decision (with `code`); both None records the score without judging.
    """

    session: ort.InferenceSession
    key: str
    info: ModelInfo
    input: InputSpec = field(default_factory=InputSpec)
    output: OutputSpec = field(default_factory=OutputSpec)
    value_name: str = "score"
    code: str = "low_quality"
    reject_above: float | None = None
    reject_below: float | None = None

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        tensor = prepare(image, face, self.input)
        name = self.session.get_inputs()[0].name
        raw = self.session.run(None, {name: tensor})[0]
        if self.output.kind == "multilabel":
            return self._per_label(interpret_labels(raw, self.output))
        value = interpret(raw, self.output)
        rejections: tuple[Rejection, ...] = ()
        if self.reject_above is not None and value >= self.reject_above:
            rejections = (
                Rejection(
                    self.code,
                    f"{self.key} scored {value:.3f} (threshold {self.reject_above:g}).",
                    self.key,
                ),
            )
        elif self.reject_below is not None and value < self.reject_below:
            rejections = (
                Rejection(
                    self.code,
                    f"{self.key} scored {value:.3f} (at least {self.reject_below:g} needed).",
                    self.key,
                ),
            )
        return ModelResult(scores={self.value_name: value}, rejections=rejections)

    def _per_label(self, scores: dict[str, float]) -> ModelResult:
        threshold = self.reject_above
        rejections = tuple(
            Rejection(
                self.code,
                f"{self.key} found {label} (score {value:.2f}, threshold {threshold:g}).",
                label,
            )
            for label, value in scores.items()
            if threshold is not None and value >= threshold
        )
        return ModelResult(scores=scores, rejections=rejections)
