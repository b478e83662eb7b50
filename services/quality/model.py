"""Six classic, reference-free image-quality metrics on the face region.

Sharpness, blur, SVD concentration and colourfulness are computed on the face box plus
a margin (the whole image when no face is given), after shrinking it so the longer side
is at most `_MAX_SIDE` px: that bounds the cost and makes the metrics comparable between
a near and a far selfie. Small crops are not enlarged, since interpolation would itself
blur them. Brightness and contrast are measured on the skin only (`skin_region`: cheeks
and nose between the eyes and the mouth), so a dark or bright background, hair or a
white collar do not move them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from shared.analysis import Face, Image, ModelInfo, ModelResult, Rejection, judging

FloatArray = NDArray[np.float64]

#: 256 px: the SVD and the blur measures cost ~8x less than at 512 on phone-size faces.
_MAX_SIDE = 256
#: Around the detector's box, which stops at the chin and mid-forehead.
_MARGIN = 0.2
#: Crete et al. use a 9-tap averaging filter as the reference re-blur.
_CRETE_TAPS = 9
#: Share of singular values counted as "top" by the SVD measure.
_SVD_TOP_SHARE = 0.10


def face_region(image: Image, face: Face | None, margin: float = _MARGIN) -> Image:
    """The face box grown by `margin` on each side, clipped to the image."""
    if face is None:
        return image
    height, width = image.shape[:2]
    x0 = max(0, math.floor(face.x - margin * face.width))
    y0 = max(0, math.floor(face.y - margin * face.height))
    x1 = min(width, math.ceil(face.x + (1 + margin) * face.width))
    y1 = min(height, math.ceil(face.y + (1 + margin) * face.height))
    if x1 - x0 < 8 or y1 - y0 < 8:
        return image
    return image[y0:y1, x0:x1]


def skin_region(image: Image, face: Face | None) -> Image:
    """The skin between the eyes and the mouth, from the landmarks (no eyes, hair, lips).

    Rows from a fifth of the way from the eye line to the mouth line down to just above
    the mouth corners; columns between the outer of the eye and mouth-corner points.
    Without landmarks: the middle of the box (columns 25-75 %, rows 40-70 %).
    """
    if face is None:
        return image
    height, width = image.shape[:2]
    if len(face.landmarks) == 5:
        (lx, ly), (rx, ry), _, (mlx, mly), (mrx, mry) = face.landmarks
        eyes_y, mouth_y = max(ly, ry), min(mly, mry)
        down = mouth_y - eyes_y
        x0, x1 = min(lx, mlx), max(rx, mrx)
        y0, y1 = eyes_y + 0.2 * down, mouth_y - 0.1 * down
    else:
        x0, x1 = face.x + 0.25 * face.width, face.x + 0.75 * face.width
        y0, y1 = face.y + 0.4 * face.height, face.y + 0.7 * face.height
    c0, c1 = max(0, math.floor(x0)), min(width, math.ceil(x1))
    r0, r1 = max(0, math.floor(y0)), min(height, math.ceil(y1))
    if c1 - c0 < 4 or r1 - r0 < 4:
        return face_region(image, face, 0.0)
    return image[r0:r1, c0:c1]


def _bounded(image: Image, max_side: int = _MAX_SIDE) -> Image:
    scale = max_side / max(image.shape[:2])
    if scale >= 1.0:
        return image
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), dtype=np.uint8)


def colorfulness(rgb: Image) -> float:
    """Hasler & Suesstrunk (2003): std and mean of the rg / yb opponent channels."""
    r, g, b = (rgb[..., i].astype(np.float64) for i in range(3))
    rg, yb = r - g, 0.5 * (r + g) - b
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def crete_blur(gray: FloatArray) -> float:
    """Crete et al. (2007) perceptual blur in [0, 1]; higher means more blurred.

    Re-blurs the image and measures how much of its neighbour-to-neighbour variation
    the re-blur removes: a sharp image loses a lot, an already blurred one little.
    The larger of the vertical and horizontal values is returned.
    """
    results = []
    for axis in (0, 1):
        kernel = (1, _CRETE_TAPS) if axis == 1 else (_CRETE_TAPS, 1)
        reblurred = cv2.blur(gray, kernel)
        d_orig = np.abs(np.diff(gray, axis=axis))
        d_blur = np.abs(np.diff(reblurred, axis=axis))
        variation = np.maximum(0.0, d_orig - d_blur)
        s_orig = float(d_orig[1:-1, 1:-1].sum())
        s_var = float(variation[1:-1, 1:-1].sum())
        results.append((s_orig - s_var) / s_orig if s_orig > 0 else 1.0)
    return max(results)


def svd_concentration(gray: FloatArray, top_share: float = _SVD_TOP_SHARE) -> float:
    """Share of the top `top_share` singular values in their sum, mean removed.

    Detail spreads energy over many singular values; blur and flat images concentrate
    it in a few. The mean is removed first so overall brightness (which only feeds
    the first singular value) does not count as structure.
    """
    centred = gray - gray.mean()
    values = np.linalg.svd(centred, compute_uv=False)
    total = float(values.sum())
    if total <= 1e-9:
        return 1.0
    top = max(1, math.ceil(top_share * values.size))
    return float(values[:top].sum()) / total


def classic_metrics(rgb: Image, skin: Image | None = None) -> dict[str, float]:
    """All six metrics of an RGB crop, already bounded in size; brightness and contrast
    on `skin` when given."""
    gray8 = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    gray = gray8.astype(np.float64)
    tone = gray if skin is None else cv2.cvtColor(skin, cv2.COLOR_RGB2GRAY).astype(np.float64)
    return {
        "sharpness": float(cv2.Laplacian(gray, cv2.CV_64F).var()),
        "colorfulness": colorfulness(rgb),
        "contrast": float((tone / 255.0).std()),
        "brightness": float(tone.mean()),
        "blur_score": crete_blur(gray / 255.0),
        "svd_score": svd_concentration(gray / 255.0),
    }


#: The bounds `ClassicMetrics.judging` takes, as the manifest's classic_metrics limits name them.
_BOUNDS = (
    "min_sharpness",
    "min_brightness",
    "max_brightness",
    "min_contrast",
    "max_blur_score",
    "max_svd_score",
    "min_colorfulness",
)


@dataclass
class ClassicMetrics:
    """Rejects faces that are blurred, badly exposed or flat.

    The stage builds it with `judging` from the manifest's `limits` of classic_metrics
    (values from the settings: `shared.settings`, docs/models.md "Quality limits"); the
    defaults here are the first calibration's (`faceval calibrate quality` on 1,721 real
    genuine photos at about the 0.5th percentile of each score, 99.5th for upper
    bounds) and serve the unit tests; the brightness floor sits below every genuine face
    (darkest skin 56) so that dark skin under poor light passes. Gaussian (sigma >= 2)
    and motion blur, a face darkened to 15 % or washed out to 15 % contrast still reject
    (unit tests). Sharpness depends on scale, so blur_score/svd_score carry most of the
    blur decision. Colourfulness is reported but not judged by default: greyscale photos
    are legitimate input. Any bound set to None is reported and not judged.

    `region` "face" measures the face box plus `margin` (the whole image when there is
    no face), brightness and contrast on the skin (`skin_region`); "image" the whole
    image, for the extra columns (see `whole_image`).
    """

    min_sharpness: float | None = 19.0
    min_brightness: float | None = 40.0
    max_brightness: float | None = 222.0
    min_contrast: float | None = 0.04
    max_blur_score: float | None = 0.87
    max_svd_score: float | None = 0.91
    min_colorfulness: float | None = None
    margin: float = _MARGIN
    region: Literal["face", "image"] = "face"
    #: The measured crop is shrunk to this longer side (cost; comparability near/far).
    max_side: int = _MAX_SIDE
    key: str = "classic_metrics"
    info: ModelInfo = field(default=ModelInfo(name="classic_metrics", version="1.0"))

    @classmethod
    def judging(cls, limits: Mapping[str, float | None], info: ModelInfo) -> ClassicMetrics:
        """The face metrics judged at `limits`, one per bound (None: reported only)."""
        return judging(cls, limits, _BOUNDS, info)

    @classmethod
    def whole_image(cls, info: ModelInfo | None = None) -> ClassicMetrics:
        """The six metrics on the whole image, reported only (a selfie's background may
        legitimately be dark or blurred)."""
        return cls(
            min_sharpness=None,
            min_brightness=None,
            max_brightness=None,
            min_contrast=None,
            max_blur_score=None,
            max_svd_score=None,
            region="image",
            # Report-only: a small copy keeps its cost (the SVD) negligible.
            max_side=256,
            key="classic_metrics_image",
            info=info or ModelInfo(name="classic_metrics_image", version="1.0"),
        )

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        if self.region == "face":
            region = face_region(image, face, self.margin)
            skin = _bounded(skin_region(image, face), self.max_side) if face else None
        else:
            region, skin = image, None
        scores = classic_metrics(_bounded(region, self.max_side), skin)
        bounds: list[tuple[str, float | None, bool, str]] = [
            ("sharpness", self.min_sharpness, False, "below"),
            ("brightness", self.min_brightness, False, "too dark"),
            ("brightness", self.max_brightness, True, "over-exposed"),
            ("contrast", self.min_contrast, False, "below"),
            ("blur_score", self.max_blur_score, True, "too blurred"),
            ("svd_score", self.max_svd_score, True, "too little detail"),
            ("colorfulness", self.min_colorfulness, False, "below"),
        ]
        rejections = []
        for name, bound, upper, why in bounds:
            if bound is None or (scores[name] <= bound if upper else scores[name] >= bound):
                continue
            what = f"below {bound:g}" if why == "below" else why
            rejections.append(
                Rejection(
                    "low_quality", f"The {name} of the face is {what} ({scores[name]:.3g}).", name
                )
            )
        return ModelResult(scores=scores, rejections=tuple(rejections))
