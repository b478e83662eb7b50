"""Presentation-attack heuristics: cues that a selfie is a photo of a photo or screen.

Five hand-made cues, each mapped to [0, 1] (1 = attack-like) and fused by a fixed
logistic function. They are weak evidence, not a certified PAD (ISO/IEC 30107-3): none was
trained or evaluated on an attack data set, a good print or a high-resolution screen
can pass them, and unusual real photos (greyscale, strong flash, a door frame behind
the head) push single cues up. Use the score to flag, and a trained model to decide.

- moire: screens and halftone prints add periodic patterns; they show as isolated
  peaks in the 2-D spectrum of the high-passed face, far above the smooth natural
  spectrum around them.
- specular: glossy paper and glass reflect large, white, near-saturated patches.
- texture: recaptures lose skin micro-texture; the uniform-LBP code histogram of the
  face then collapses onto a few codes (low entropy).
- color: reprinting and re-photographing a screen desaturate skin.
- border: a held-up photo or phone shows its straight edges around the face.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from shared.analysis import Face, Image, ModelInfo, ModelResult, Rejection

FloatArray = NDArray[np.float32]

#: Logistic fusion: prob = sigmoid(BIAS + sum(WEIGHTS[c] * cue[c])). Hand-set, not
#: fitted. A full moire cue (a screen's pixel lattice is the most specific sign) reaches
#: 0.73 alone; every other cue needs support from a second one to pass 0.5; with no cue
#: at all prob is 0.018.
WEIGHTS: dict[str, float] = {
    "moire": 5.0,
    "border": 3.0,
    "texture": 2.5,
    "specular": 2.0,
    "color": 1.0,
}
BIAS = -4.0
_MAX_SIDE = 512
#: Lowest frequency (cycles/pixel) searched: periods up to 10 px, up to the corners.
_MIN_FREQ = 0.1
#: Peaks averaged: a 2-D grid gives two symmetric pairs off the axes.
_TOP_PEAKS = 4
#: Bins either side of the axes ignored: JPEG blocks and the image edges put energy there.
_AXIS_GUARD = 2
#: How far around the face the border cue looks, in face sizes.
_SURROUND = 2.0


def _ramp(value: float, low: float, high: float) -> float:
    """0 at `low`, 1 at `high`, linear between (either direction)."""
    return float(np.clip((value - low) / (high - low), 0.0, 1.0))


def _crop(image: Image, face: Face | None, grow: float) -> tuple[Image, tuple[int, int]]:
    """The face box grown by `grow` face sizes per side, clipped, and its offset."""
    if face is None:
        return image, (0, 0)
    height, width = image.shape[:2]
    x0 = max(0, math.floor(face.x - grow * face.width))
    y0 = max(0, math.floor(face.y - grow * face.height))
    x1 = min(width, math.ceil(face.x + (1 + grow) * face.width))
    y1 = min(height, math.ceil(face.y + (1 + grow) * face.height))
    if x1 - x0 < 16 or y1 - y0 < 16:
        return image, (0, 0)
    return image[y0:y1, x0:x1], (x0, y0)


def _bounded(image: Image) -> tuple[Image, float]:
    scale = min(1.0, _MAX_SIDE / max(image.shape[:2]))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
    return np.asarray(cv2.resize(image, size, interpolation=cv2.INTER_AREA), np.uint8), scale


def moire_peakness(gray: FloatArray) -> float:
    """Mean height (in log-magnitude) of the strongest isolated spectral peaks.

    Each bin is compared with a blurred version of the log spectrum around it, so the
    natural 1/f fall-off cancels and only narrow peaks remain: real faces give 1.1-1.4,
    a screen lattice of period 2.5-4 px 2-3.7.
    """
    high = gray - cv2.GaussianBlur(gray, (0, 0), 3.0)
    rows, cols = high.shape
    window = np.outer(np.hanning(rows), np.hanning(cols)).astype(np.float32)
    spectrum = np.fft.fftshift(np.abs(np.fft.fft2(high * window)))
    log_mag = np.log1p(spectrum).astype(np.float32)
    background = cv2.GaussianBlur(log_mag, (0, 0), 3.0)
    fy = np.fft.fftshift(np.fft.fftfreq(rows))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(cols))[None, :]
    band = (
        (np.hypot(fx, fy) >= _MIN_FREQ)
        & (np.abs(fy) * rows > _AXIS_GUARD)
        & (np.abs(fx) * cols > _AXIS_GUARD)
    )
    peaks = (log_mag - background)[band]
    if peaks.size < _TOP_PEAKS:
        return 0.0
    return float(np.partition(peaks, peaks.size - _TOP_PEAKS)[-_TOP_PEAKS:].mean())


def specular_fraction(rgb: Image) -> float:
    """Share of near-white pixels: bright (V >= 235) and almost colourless (S <= 30)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    return float(((hsv[..., 2] >= 235) & (hsv[..., 1] <= 30)).mean())


def lbp_entropy(gray: FloatArray) -> float:
    """Normalised entropy of the uniform LBP(8, 1) code histogram (10 codes), in [0, 1].

    Uniform patterns (at most two 0/1 transitions around the circle) are labelled by
    their number of ones (0-8); all others share label 9 (Ojala et al., 2002).
    """
    center = gray[1:-1, 1:-1]
    rows, cols = gray.shape
    offsets = ((0, 0), (0, 1), (0, 2), (1, 2), (2, 2), (2, 1), (2, 0), (1, 0))
    bits = np.stack(
        [gray[dy : rows - 2 + dy, dx : cols - 2 + dx] >= center for dy, dx in offsets]
    ).astype(np.int8)
    transitions = np.abs(np.diff(bits, axis=0, append=bits[:1])).sum(axis=0)
    labels = np.where(transitions <= 2, bits.sum(axis=0), 9)
    hist = np.bincount(labels.ravel(), minlength=10).astype(np.float64)
    p = hist[hist > 0] / hist.sum()
    return float(-(p * np.log(p)).sum() / np.log(10.0))


def chroma_level(rgb: Image) -> float:
    """Median distance from grey in the CrCb plane, per unit of mid-grey luminance.

    Cr/Cb offsets shrink with exposure, so they are rescaled to a luminance of 128
    (floored at 32, where sensor noise takes over): a dark but colourful face is not
    taken for a desaturated one. 0 for a greyscale face.
    """
    ycrcb = cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb).astype(np.float32)
    chroma = np.hypot(ycrcb[..., 1] - 128.0, ycrcb[..., 2] - 128.0)
    return float(np.median(chroma * 128.0 / np.maximum(ycrcb[..., 0], 32.0)))


def frame_sides(surround: Image, box: tuple[float, float, float, float]) -> int:
    """How many sides of `box` (x, y, w, h in `surround`) have a long straight edge.

    A side counts when a near-horizontal (top/bottom) or near-vertical (left/right)
    segment at least 0.8 face sizes long lies wholly outside the face on that side
    and runs along it: the edges of a held-up photo or phone do.
    """
    gray = cv2.cvtColor(surround, cv2.COLOR_RGB2GRAY)
    median = float(np.median(gray))
    edges = cv2.Canny(gray, int(max(10.0, 0.66 * median)), int(min(255.0, 1.33 * median + 20)))
    x, y, w, h = box
    min_len = 0.8 * min(w, h)
    lines = cv2.HoughLinesP(
        edges,
        1,
        np.pi / 180,
        threshold=max(10, int(min_len / 2)),
        minLineLength=min_len,
        maxLineGap=4,
    )
    if lines is None:
        return 0
    sides: set[str] = set()
    for x1, y1, x2, y2 in lines.reshape(-1, 4).astype(np.float64):
        angle = abs(math.degrees(math.atan2(y2 - y1, x2 - x1))) % 180
        overlaps_x = min(x1, x2) < x + w and max(x1, x2) > x
        overlaps_y = min(y1, y2) < y + h and max(y1, y2) > y
        if (angle < 10 or angle > 170) and overlaps_x:
            if max(y1, y2) < y:
                sides.add("top")
            elif min(y1, y2) > y + h:
                sides.add("bottom")
        elif 80 < angle < 100 and overlaps_y:
            if max(x1, x2) < x:
                sides.add("left")
            elif min(x1, x2) > x + w:
                sides.add("right")
    return len(sides)


def cue_scores(image: Image, face: Face | None) -> dict[str, float]:
    """The five cues in [0, 1], 1 = attack-like; see the module docstring.

    Ramps were set on real faces (astronaut, Tom Hanks, t1.jpg) against synthetic
    attacks: LBP entropy is 0.79-0.93 on real faces and ~0.5 once micro-texture is
    blurred away; normalised chroma is 21-41 on real colour faces; specular share is <= 0.02 real
    and ~0.09 with a glare patch. One straight side is common in real backgrounds, so
    border starts counting at two sides and is full at three.
    """
    face_rgb, _ = _bounded(_crop(image, face, 0.0)[0])
    gray = cv2.cvtColor(face_rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    scores = {
        "moire": _ramp(moire_peakness(gray), 1.6, 3.0),
        "specular": _ramp(specular_fraction(face_rgb), 0.01, 0.08),
        "texture": _ramp(lbp_entropy(gray), 0.80, 0.60),
        "color": _ramp(chroma_level(face_rgb), 12.0, 3.0),
        "border": 0.0,
    }
    if face is not None:
        surround, (ox, oy) = _crop(image, face, _SURROUND)
        small, scale = _bounded(surround)
        box = (
            (face.x - ox) * scale,
            (face.y - oy) * scale,
            face.width * scale,
            face.height * scale,
        )
        scores["border"] = _ramp(float(frame_sides(small, box)), 1.0, 3.0)
    return scores


@dataclass
class PadHeuristics:
    """Fuses the cues into `prob` (logistic, `WEIGHTS` and `BIAS`); rejects at `threshold`.

    The pad stage builds it with `threshold` None: the cues are reported beside
    MiniFASNet's decision, never a rejection on their own, because the hand-set weights
    were never fitted on attack data (and no real attack data exists here to fit them).
    With a threshold, at 0.5 only a full moire cue rejects on its own. Real sample faces
    score 0.02-0.05.
    """

    threshold: float | None = 0.5
    key: str = field(default="as_heuristics", init=False)
    info: ModelInfo = field(default=ModelInfo(name="as_heuristics", version="1.0"))

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        cues = cue_scores(image, face)
        logit = BIAS + sum(WEIGHTS[name] * value for name, value in cues.items())
        prob = 1.0 / (1.0 + math.exp(-logit))
        rejections: tuple[Rejection, ...] = ()
        if self.threshold is not None and prob >= self.threshold:
            strongest = max(cues, key=lambda name: WEIGHTS[name] * cues[name])
            rejections = (
                Rejection(
                    "spoof_detected",
                    f"The image looks like a photo of a photo or screen (score {prob:.2f}, "
                    f"threshold {self.threshold:.2f}; strongest cue: {strongest}).",
                    subject=self.key,
                ),
            )
        return ModelResult(scores={"prob": prob, **cues}, rejections=rejections)
