"""BRISQUE (Mittal, Moorthy & Bovik, 2012): a no-reference quality score, lower is better.

The features and the epsilon-SVR are those of the `brisque` package (Apache-2.0), whose
trained SVM and feature ranges the registry materialises. The package's own scoring code
fails under NumPy 2, so the same computation is done here: vectorised with OpenCV, and
the RBF SVR evaluated in NumPy instead of through libsvm. A unit test checks the score
against the package's feature code with libsvm's prediction.

Features: on the grey image (scikit-image's luma weights, values in [0, 1]) and on a
half-size copy, the MSCN coefficients (local mean and deviation under a 7x7 Gaussian,
sigma 7/6, zero-padded) and their four neighbour products are each fitted with an
asymmetric generalised Gaussian: 2 + 4 x 4 = 18 numbers per scale, 36 in all.
"""

from __future__ import annotations

import math
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

from services.quality.model import face_region
from shared.analysis import Face, Image, ModelInfo, ModelResult, Rejection

FloatArray = NDArray[np.float64]

_LUMA = np.array([0.2125, 0.7154, 0.0721])
_KERNEL_SIZE = 7
_SIGMA = 7 / 6
#: Scores are comparable only at a common scale: the region's shorter side is resized to
#: it. 192 px costs half of 256 and separates blur as well on real photos (issue 12: AUC
#: sharp vs sigma-1.5 blur 0.988 at 192 px and margin 0.2, 0.987 at 256 px and 0.5).
SHORT_SIDE = 192
#: Around the detector's box: the face with a little hair and background.
MARGIN = 0.2


@dataclass(frozen=True)
class SvrModel:
    """An RBF epsilon-SVR in libsvm's text format: f(x) = sum(coef * exp(-g |x - sv|^2)) - rho."""

    gamma: float
    rho: float
    coefs: FloatArray
    vectors: FloatArray

    @classmethod
    def load(cls, path: Path, features: int = 36) -> SvrModel:
        header: dict[str, str] = {}
        coefs: list[float] = []
        rows: list[FloatArray] = []
        with path.open() as handle:
            for line in handle:
                if line.strip() == "SV":
                    break
                key, _, value = line.strip().partition(" ")
                header[key] = value
            for line in handle:
                parts = line.split()
                if not parts:
                    continue
                coefs.append(float(parts[0]))
                row = np.zeros(features, dtype=np.float64)
                for item in parts[1:]:
                    index, _, value = item.partition(":")
                    row[int(index) - 1] = float(value)
                rows.append(row)
        if header.get("svm_type") != "epsilon_svr" or header.get("kernel_type") != "rbf":
            raise ValueError(f"{path}: expected an RBF epsilon-SVR, got {header}")
        return cls(
            gamma=float(header["gamma"]),
            rho=float(header["rho"]),
            coefs=np.asarray(coefs, dtype=np.float64),
            vectors=np.vstack(rows),
        )

    def predict(self, x: FloatArray) -> float:
        distances = ((self.vectors - x) ** 2).sum(axis=1)
        return float(self.coefs @ np.exp(-self.gamma * distances) - self.rho)


class _NoObjects(pickle.Unpickler):
    """The feature ranges are plain lists of floats: refuse anything that is not."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"refusing {module}.{name} in a parameter file")


def load_ranges(path: Path) -> tuple[FloatArray, FloatArray]:
    with path.open("rb") as handle:
        data = _NoObjects(handle).load()
    low = np.asarray(data["min_"], dtype=np.float64)
    high = np.asarray(data["max_"], dtype=np.float64)
    return low, high


def _gaussian_kernel() -> FloatArray:
    yy, xx = np.indices((_KERNEL_SIZE, _KERNEL_SIZE)) - _KERNEL_SIZE // 2
    kernel = np.exp(-(xx**2 + yy**2) / (2 * _SIGMA**2))
    return np.asarray(kernel / kernel.sum(), dtype=np.float64)


_KERNEL = _gaussian_kernel()


def mscn(gray: FloatArray) -> FloatArray:
    """Mean-subtracted, contrast-normalised coefficients (zero padding, as scipy's 'same')."""

    def blur(x: FloatArray) -> FloatArray:
        return np.asarray(cv2.filter2D(x, -1, _KERNEL, borderType=cv2.BORDER_CONSTANT))

    mean = blur(gray)
    deviation = np.sqrt(np.abs(mean**2 - blur(gray**2)))
    return (gray - mean) / (deviation + 1 / 255)


def _phi(alpha: float) -> float:
    return float(
        special.gamma(2 / alpha) ** 2 / (special.gamma(1 / alpha) * special.gamma(3 / alpha))
    )


def aggd_fit(x: FloatArray) -> tuple[float, float, float, float]:
    """Asymmetric generalised Gaussian: (shape, mean, left variance, right variance)."""
    left, right = x[x < 0], x[x >= 0]
    left_sq = float((left**2).mean()) if left.size else 0.0
    right_sq = float((right**2).mean()) if right.size else 0.0
    gamma = math.sqrt(left_sq) / math.sqrt(right_sq) if right_sq > 0 else math.inf
    r_hat = float(np.abs(x).mean() ** 2 / (x**2).mean()) if (x**2).mean() > 0 else 0.0
    r_norm = r_hat * (gamma**3 + 1) * (gamma + 1) / (gamma**2 + 1) ** 2
    # The package's solver and starting point, so that the SVR sees the features it was
    # trained on.
    alpha = float(optimize.root(lambda z: _phi(float(z[0])) - r_norm, [0.2]).x[0])
    constant = math.sqrt(special.gamma(1 / alpha) / special.gamma(3 / alpha))
    mean = (
        (math.sqrt(right_sq) - math.sqrt(left_sq))
        * constant
        * float(special.gamma(2 / alpha) / special.gamma(1 / alpha))
    )
    return alpha, mean, left_sq, right_sq


def scale_features(gray: FloatArray) -> list[float]:
    coefs = mscn(gray)
    alpha, _, left, right = aggd_fit(coefs)
    features = [alpha, (left + right) / 2]
    products = (
        coefs[:, :-1] * coefs[:, 1:],
        coefs[:-1, :] * coefs[1:, :],
        coefs[:-1, :-1] * coefs[1:, 1:],
        coefs[1:, :-1] * coefs[:-1, 1:],
    )
    for product in products:
        features.extend(aggd_fit(product))
    return features


def brisque_features(rgb: Image) -> FloatArray:
    gray = (rgb.astype(np.float64) / 255.0) @ _LUMA
    half = np.asarray(
        cv2.resize(gray, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_CUBIC), np.float64
    )
    return np.asarray(scale_features(gray) + scale_features(half), dtype=np.float64)


def normalised_region(image: Image, face: Face | None, margin: float = MARGIN) -> Image:
    """The face region (whole image without a face), shorter side resized to SHORT_SIDE."""
    region = face_region(image, face, margin)
    scale = SHORT_SIDE / min(region.shape[:2])
    size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(region, size, interpolation=interp), dtype=np.uint8)


@dataclass
class Brisque:
    """BRISQUE of the normalised face region; rejects above `max_score` (None: report only).

    The SVR was trained on LIVE (natural scenes, synthetic distortions), not on selfies;
    the limit comes from `faceval calibrate quality` on real genuine photos
    (docs/models.md, Quality limits).
    """

    svr: SvrModel
    low: FloatArray
    high: FloatArray
    max_score: float | None = None
    key: str = "brisque"
    info: ModelInfo = field(default=ModelInfo(name="brisque", version="brisque-0.2.0-svm"))

    @classmethod
    def from_files(cls, svm: Path, ranges: Path, **kwargs: Any) -> Brisque:
        low, high = load_ranges(ranges)
        return cls(svr=SvrModel.load(svm), low=low, high=high, **kwargs)

    def score(self, rgb: Image) -> float:
        features = brisque_features(rgb)
        scaled = -1 + 2.0 * (features - self.low) / (self.high - self.low)
        return self.svr.predict(scaled)

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        value = self.score(normalised_region(image, face))
        rejections: tuple[Rejection, ...] = ()
        if self.max_score is not None and value > self.max_score:
            rejections = (
                Rejection(
                    "low_quality",
                    f"The BRISQUE score of the face is {value:.1f} (at most {self.max_score:g}).",
                    "brisque",
                ),
            )
        return ModelResult(scores={"score": value}, rejections=rejections)
