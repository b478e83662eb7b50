"""The pure analysis contract every stage model implements.

Model code depends on this module only (plus numpy/OpenCV/ONNX Runtime): arrays in,
typed results out. No broker, database or settings imports, so a model can be tested,
benchmarked and evaluated on its own. The shared runtime times each model, records its
output and turns rejections into the transaction's verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import NDArray

#: An RGB image, height x width x 3, uint8.
Image = NDArray[np.uint8]

ImageSide = Literal["near", "far"]
IMAGE_SIDES: tuple[ImageSide, ImageSide] = ("near", "far")


@dataclass(frozen=True)
class ModelInfo:
    """Identifies what produced a score: stored beside every score."""

    name: str
    version: str


@dataclass(frozen=True)
class Face:
    """A detected face in the coordinates of the full (EXIF-oriented) image."""

    x: float
    y: float
    width: float
    height: float
    score: float
    #: Five points, in this order: left eye, right eye, nose tip, left mouth corner,
    #: right mouth corner ("left"/"right" as seen in the image).
    landmarks: tuple[tuple[float, float], ...]
    #: (yaw, pitch, roll) in degrees once the detector stage estimated it, else None.
    pose: tuple[float, float, float] | None = None

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "x": self.x,
            "y": self.y,
            "width": self.width,
            "height": self.height,
            "score": self.score,
            "landmarks": [list(p) for p in self.landmarks],
        }
        if self.pose is not None:
            data["pose"] = dict(zip(("yaw", "pitch", "roll"), self.pose, strict=True))
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Face:
        marks = data.get("landmarks") or []
        assert isinstance(marks, list)
        pose = data.get("pose")
        angles = (
            (float(pose["yaw"]), float(pose["pitch"]), float(pose["roll"]))
            if isinstance(pose, Mapping)
            else None
        )
        return cls(
            x=float(data["x"]),  # type: ignore[arg-type]
            y=float(data["y"]),  # type: ignore[arg-type]
            width=float(data["width"]),  # type: ignore[arg-type]
            height=float(data["height"]),  # type: ignore[arg-type]
            score=float(data["score"]),  # type: ignore[arg-type]
            landmarks=tuple((float(p[0]), float(p[1])) for p in marks),
            pose=angles,
        )


@dataclass(frozen=True)
class Rejection:
    """Why an image (or a pair) fails a stage. `code` is a stable reason code."""

    code: str
    detail: str
    #: The metric or accessory that triggered it (e.g. "sharpness", "sunglasses").
    subject: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "detail": self.detail, "subject": self.subject}


@dataclass(frozen=True)
class ModelResult:
    """What one model says about one image."""

    scores: Mapping[str, float]
    rejections: Sequence[Rejection] = ()
    #: Only the face detector sets this: the face later stages analyse.
    face: Face | None = None
    #: Small, JSON-safe facts worth keeping (e.g. how many faces were seen).
    details: Mapping[str, object] = field(default_factory=dict)
    #: A face-recognition model sets this: the unit-length template of the face, handed to
    #: the stage's pair check and to 1:1 / 1:N matching (never a score, never a decision).
    embedding: Embedding | None = None


@dataclass(frozen=True)
class Embedding:
    """A face template: which model made it (templates of two models never compare)."""

    model: str
    version: str
    vector: NDArray[np.float32]

    def to_dict(self) -> dict[str, object]:
        return {"model": self.model, "version": self.version,
                "vector": [round(float(v), 6) for v in self.vector]}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Embedding:
        values = data["vector"]
        assert isinstance(values, list)
        return cls(str(data["model"]), str(data["version"]), np.asarray(values, np.float32))


@dataclass(frozen=True)
class PairResult:
    """What a stage concludes from near and far together (e.g. 3-D consistency)."""

    scores: Mapping[str, float]
    rejections: Sequence[Rejection] = ()


@runtime_checkable
class Model(Protocol):
    """One analyzer inside a stage. Adding a model to a stage is adding one of these."""

    @property
    def key(self) -> str:
        """Column key used in stored data, e.g. "classic_metrics", "liqe", "as_heuristics"."""
        ...

    @property
    def info(self) -> ModelInfo: ...

    def analyze(self, image: Image, face: Face | None) -> ModelResult: ...


class ModelUnavailable(Exception):
    """A model that is declared but not installed/configured: recorded as not run."""


@dataclass(frozen=True)
class UnavailableModel:
    """A declared model whose weights are not installed: recorded as not run, never scored."""

    key: str
    info: ModelInfo
    reason: str

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        raise ModelUnavailable(self.reason)


_Built = TypeVar("_Built")


def judging(
    build: Callable[..., _Built],
    limits: Mapping[str, float | None],
    names: Collection[str],
    info: ModelInfo,
) -> _Built:
    """A model built with its manifest limits (`limits`, resolved by the registry) as the
    arguments of the same names. Exactly `names` must be given: a limit missing from the
    manifest would silently keep the code's default, an extra one would be ignored."""
    if set(limits) != set(names):
        wanted, given = sorted(names), sorted(limits)
        raise ValueError(f"{info.name} needs exactly the limits {wanted}, not {given}")
    return build(info=info, **limits)
