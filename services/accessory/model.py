"""Accessory heuristics: sunglasses, clear glasses, face mask and hat.

The face is first warped to a canonical, upright frame from its five landmarks (a
similarity transform, so proportions are kept), then each accessory is judged by
comparing fixed regions of that frame with the wearer's own skin. Comparing with the
person's skin rather than absolute values keeps the scores roughly independent of
exposure and skin tone.

These are hand-made image statistics, not a trained classifier: they catch the obvious
cases (dark lenses, a coloured mask, a hat down to the eyebrows) and are tuned not to
reject ordinary faces. Known blind spots: heavy beards look like a mask, fringes that
cover the forehead look like a hat, and on greyscale images the colour cues are silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import NDArray

from shared.analysis import Face, Image, ModelInfo, ModelResult, Rejection

FloatArray = NDArray[np.float32]
BoolArray = NDArray[np.bool_]

#: Canonical frame: inter-ocular distance (IOD) 40 px, eyes at y=100, room above for a
#: hat. The points are the ArcFace 112x112 template, rescaled to that distance.
_CANVAS = (160, 200)  # width, height
_TEMPLATE = np.array(
    [[60.0, 100.0], [100.0, 100.0], [80.1, 122.9], [63.7, 146.3], [96.3, 146.1]],
    dtype=np.float32,
)

# Regions as (x0, y0, x1, y1) in the canonical frame.
_EYES = ((49, 93, 71, 107), (89, 93, 111, 107))
_CHEEKS = ((44, 114, 62, 132), (98, 114, 116, 132))
#: Between the eyebrows (~0.3 IOD above the eyes) and a typical hairline (~0.8 IOD).
_FOREHEAD = (66, 72, 94, 86)
_LOWER_FACE = (62, 132, 98, 176)
_BRIDGE = (76, 90, 84, 106)
_RIMS = ((50, 110, 70, 120), (90, 110, 110, 120))
#: Rows between a pixel and the neighbours a thin frame line is compared with.
_LINE_GAP = 3

#: Chai & Ngan (1999) YCrCb skin box, in OpenCV's 0..255 Cr/Cb.
_CR_RANGE = (133, 173)
_CB_RANGE = (77, 127)
#: Fraction of skin pixels in the reference regions below which colour cues are muted.
_MIN_SKIN = 0.5

_NAMES = {
    "sunglasses": "Sunglasses",
    "glasses": "Glasses",
    "face_mask": "A face mask",
    "hat": "A hat or head covering",
}


def _ramp(value: float, low: float, high: float) -> float:
    """0 at `low`, 1 at `high`, linear between (either direction)."""
    return float(np.clip((value - low) / (high - low), 0.0, 1.0))


@dataclass(frozen=True)
class _Frame:
    """The face in the canonical frame: colour planes and which pixels are real."""

    luma: FloatArray
    cr: FloatArray
    cb: FloatArray
    valid: BoolArray

    def region(self, plane: FloatArray, box: tuple[int, int, int, int]) -> FloatArray:
        x0, y0, x1, y1 = box
        return plane[y0:y1, x0:x1][self.valid[y0:y1, x0:x1]]

    def skin(self, box: tuple[int, int, int, int]) -> BoolArray:
        cr, cb = self.region(self.cr, box), self.region(self.cb, box)
        inside: BoolArray = (
            (cr >= _CR_RANGE[0])
            & (cr <= _CR_RANGE[1])
            & (cb >= _CB_RANGE[0])
            & (cb <= _CB_RANGE[1])
        )
        return inside


def _align(image: Image, face: Face) -> _Frame:
    src = np.asarray(face.landmarks, dtype=np.float32)
    matrix, _ = cv2.estimateAffinePartial2D(src, _TEMPLATE, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("the face landmarks are degenerate")
    ycrcb = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)
    warped = cv2.warpAffine(ycrcb, matrix, _CANVAS, flags=cv2.INTER_AREA)
    ones = np.full(image.shape[:2], 255, dtype=np.uint8)
    valid = cv2.warpAffine(ones, matrix, _CANVAS, flags=cv2.INTER_NEAREST) > 0
    planes = warped.astype(np.float32)
    return _Frame(luma=planes[..., 0], cr=planes[..., 1], cb=planes[..., 2], valid=valid)


def _median(values: FloatArray, default: float) -> float:
    return float(np.median(values)) if values.size else default


def _chroma(frame: _Frame, box: tuple[int, int, int, int]) -> tuple[float, float]:
    return (
        _median(frame.region(frame.cr, box), 128.0),
        _median(frame.region(frame.cb, box), 128.0),
    )


def _skin_fraction(frame: _Frame, boxes: tuple[tuple[int, int, int, int], ...]) -> float:
    masks = [frame.skin(b) for b in boxes]
    total = sum(m.size for m in masks)
    return sum(int(m.sum()) for m in masks) / total if total else 0.0


def _sunglasses(frame: _Frame) -> float:
    """Dark, flat, non-skin eye patches compared with the cheek on the same side.

    A bare eye is darker than the cheek (iris, lashes) but mixes that with sclera and
    lids: its median is ~0.6-0.9 of the cheek and its spread is large. A lens is
    uniformly dark. The less covered side is scored, so both eyes must look covered
    and a shadow on one side is not enough.
    """
    sides = []
    for eye, cheek in zip(_EYES, _CHEEKS, strict=True):
        patch = frame.region(frame.luma, eye)
        reference = max(_median(frame.region(frame.luma, cheek), 0.0), 1.0)
        if patch.size == 0:
            continue
        ratio = float(np.median(patch)) / reference
        spread = float(np.std(patch)) / reference
        darkness = _ramp(ratio, 0.6, 0.3)
        flatness = _ramp(spread, 0.2, 0.05)
        non_skin = 1.0 - float(frame.skin(eye).mean())
        sides.append(darkness * (0.6 + 0.25 * flatness + 0.15 * non_skin))
    return min(sides) if sides else 0.0


def _face_mask(frame: _Frame) -> float:
    """The lower face is not skin, and is less skin-coloured than the upper face.

    Lips are redder than skin, so for the lower face anything at least as red as the
    skin box counts as skin, and only a shift towards neutral or blue (Cr down, Cb up:
    white, black, blue and green masks) counts as colour evidence. The skin cue only
    counts as far as the reference regions are skin, so odd white balance or a
    greyscale photo mutes it.
    """
    reference = (*_CHEEKS, _FOREHEAD)
    ref_skin = _skin_fraction(frame, reference)
    cr, cb = frame.region(frame.cr, _LOWER_FACE), frame.region(frame.cb, _LOWER_FACE)
    low_skin = float(((cr >= _CR_RANGE[0]) & (cb <= _CB_RANGE[1])).mean()) if cr.size else 1.0
    skin_cue = _ramp(ref_skin - low_skin, 0.1, 0.6) * min(1.0, ref_skin / _MIN_SKIN)
    ref_cr, ref_cb = np.median([_chroma(frame, b) for b in reference], axis=0)
    low_cr, low_cb = _chroma(frame, _LOWER_FACE)
    towards_neutral = float((ref_cr - low_cr) + (low_cb - ref_cb)) / np.sqrt(2.0)
    return 0.6 * skin_cue + 0.4 * _ramp(towards_neutral, 6.0, 20.0)


def _hat(frame: _Frame) -> float:
    """The forehead band is not skin while the cheeks are, and differs from them."""
    cheek_skin = _skin_fraction(frame, _CHEEKS)
    forehead_skin = _skin_fraction(frame, (_FOREHEAD,))
    skin_cue = _ramp(cheek_skin - forehead_skin, 0.2, 0.7) * min(1.0, cheek_skin / _MIN_SKIN)
    cheek = np.median([_chroma(frame, b) for b in _CHEEKS], axis=0)
    colour = float(np.hypot(*(np.asarray(_chroma(frame, _FOREHEAD)) - cheek)))
    cheek_y = _median(np.concatenate([frame.region(frame.luma, b) for b in _CHEEKS]), 1.0)
    forehead_y = _median(frame.region(frame.luma, _FOREHEAD), cheek_y)
    luma = abs(np.log((forehead_y + 1.0) / (cheek_y + 1.0)))
    difference = max(_ramp(colour, 8.0, 25.0), _ramp(float(luma), 0.4, 1.0))
    return 0.6 * skin_cue + 0.4 * difference


def _dark_line(frame: _Frame, box: tuple[int, int, int, int], reference: float) -> float:
    """Depth of the darkest thin horizontal line running across the whole box.

    Each pixel is compared with the pixels `_LINE_GAP` rows above and below it; a row
    scores the 20th percentile of that over the columns, so the line has to span at
    least 80 % of the box (a spectacle frame does; an eyelid crease or a freckle
    rarely does). Relative to the cheek luminance, so exposure does not matter.
    """
    x0, y0, x1, y1 = box
    luma = frame.luma[y0 - _LINE_GAP : y1 + _LINE_GAP, x0:x1]
    valid = frame.valid[y0 - _LINE_GAP : y1 + _LINE_GAP, x0:x1]
    if not valid.all():
        return 0.0
    above, middle, below = luma[: -2 * _LINE_GAP], luma[_LINE_GAP:-_LINE_GAP], luma[2 * _LINE_GAP :]
    # A line drawn across a slightly rolled face wanders by a row; let each column
    # take its best row within +-1 before the rows are compared.
    depth = cv2.dilate(np.minimum(above, below) - middle, np.ones((3, 1), np.uint8))
    return float(np.percentile(depth, 20, axis=1).max()) / max(reference, 1.0)


def _glasses(frame: _Frame) -> float:
    """A dark line over the nose bridge and, less weighted, under both eyes.

    A bare nose bridge has no horizontal line; a frame's bridge does. Lower rims are
    weaker evidence (eye bags and lashes draw lines there too).
    """
    cheeks = np.concatenate([frame.region(frame.luma, b) for b in _CHEEKS])
    reference = _median(cheeks, 1.0)
    bridge = _dark_line(frame, _BRIDGE, reference)
    rims = min(_dark_line(frame, box, reference) for box in _RIMS)
    return 0.7 * _ramp(bridge, 0.04, 0.15) + 0.3 * _ramp(rims, 0.04, 0.15)


@dataclass
class AccessoryHeuristics:
    """Scores four accessories in [0, 1] and rejects each one over its threshold.

    Thresholds were set on real sample faces (which score well below them) and on
    synthetic occlusions (painted lenses, pasted masks). Glasses and hat are the least
    reliable, so their thresholds are the most conservative.
    """

    sunglasses_threshold: float = 0.6
    glasses_threshold: float = 0.8
    face_mask_threshold: float = 0.6
    hat_threshold: float = 0.8
    key: str = field(default="accessory_detector", init=False)
    info: ModelInfo = field(default=ModelInfo(name="accessory_detector", version="1.0"))

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        if face is None or len(face.landmarks) != 5:
            raise ValueError("accessory detection needs a detected face with five landmarks")
        frame = _align(image, face)
        scores = {
            "sunglasses": _sunglasses(frame),
            "glasses": _glasses(frame),
            "face_mask": _face_mask(frame),
            "hat": _hat(frame),
        }
        thresholds = {
            "sunglasses": self.sunglasses_threshold,
            "glasses": self.glasses_threshold,
            "face_mask": self.face_mask_threshold,
            "hat": self.hat_threshold,
        }
        rejections = tuple(
            Rejection(
                "accessory_detected",
                f"{_NAMES[name]} detected on the face (score {scores[name]:.2f}, "
                f"threshold {thresholds[name]:.2f}).",
                subject=name,
            )
            for name in scores
            if scores[name] >= thresholds[name]
        )
        return ModelResult(scores=scores, rejections=rejections)
