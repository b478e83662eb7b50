"""Synthetic accessories painted on real faces: masks, sunglasses, clear glasses and hats.

Every function takes an RGB uint8 image and the detector's five landmarks (left eye, right
eye, nose tip, left and right mouth corner, as `shared.analysis.Face` orders them) and
returns a new image; randomness comes only from the `numpy.random.Generator` passed in, so a
seed reproduces an image. The training script, the evaluation and the demo samples share
these functions, so the accessories they see are drawn the same way.

Geometry lives in a face frame: one unit across is the inter-ocular distance, one unit down
is the eye-to-mouth distance divided by 1.16 (the ArcFace template's ratio), the origin is
the eyes' midpoint. In it the brows sit near w = -0.35, the nose tip near (0, 0.57), the
mouth near w = 1.16 and the chin near w = 1.75.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import NDArray

Image = NDArray[np.uint8]
Points = NDArray[np.float64]
Rgb = tuple[float, float, float]

#: What `render` can draw. "hat_high" is a hat that leaves the brows visible (a negative).
KINDS = ("face_mask", "sunglasses", "glasses", "hat", "hat_high")
#: Where the edge of a hat may sit: covering the brows, or clearly above them.
HAT_COVERS_BROWS = (-0.3, -0.02)
HAT_ABOVE_BROWS = (-1.15, -0.7)
#: The lines of the subpixel polygon fill (cv2 `shift`).
_SHIFT = 4

_MASK_COLOURS: tuple[Rgb, ...] = (
    (20, 20, 22), (235, 235, 235), (150, 195, 230), (40, 60, 110), (120, 120, 125),
    (230, 170, 190), (60, 90, 60), (170, 40, 40), (200, 190, 160), (90, 60, 120),
)  # fmt: skip
_LENS_COLOURS: tuple[Rgb, ...] = (
    (10, 10, 12), (25, 20, 15), (45, 30, 20), (20, 35, 25), (15, 20, 45), (40, 40, 40),
)  # fmt: skip
_FRAME_COLOURS: tuple[Rgb, ...] = (
    (15, 15, 15), (60, 40, 25), (110, 70, 35), (190, 160, 90), (180, 180, 185), (120, 30, 30),
)  # fmt: skip
_HAT_COLOURS: tuple[Rgb, ...] = (
    (15, 15, 18), (200, 200, 200), (30, 45, 90), (150, 30, 30), (90, 90, 95), (60, 90, 50),
    (190, 160, 110), (110, 75, 45), (230, 200, 60), (40, 110, 160),
)  # fmt: skip


@dataclass(frozen=True)
class FaceFrame:
    """Maps face-frame units (u across, w down) to image pixels."""

    origin: Points
    across: Points
    down: Points

    @classmethod
    def from_landmarks(cls, landmarks: Sequence[Sequence[float]] | Points) -> FaceFrame:
        pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
        origin = (pts[0] + pts[1]) / 2
        across = pts[1] - pts[0]
        unit = across / max(float(np.hypot(*across)), 1e-6)
        normal = np.array([-unit[1], unit[0]])
        mouth = (pts[3] + pts[4]) / 2
        height = float(np.dot(mouth - origin, normal)) / 1.16
        if height <= 0:  # landmarks upside down or degenerate: fall back to a square frame
            height = float(np.hypot(*across))
        return cls(origin=origin, across=across, down=normal * height)

    @property
    def scale(self) -> float:
        """Pixels per face unit (the inter-ocular distance)."""
        return float(np.hypot(*self.across))

    def to_image(self, uw: Points) -> Points:
        uw = np.asarray(uw, dtype=np.float64).reshape(-1, 2)
        return self.origin + uw[:, :1] * self.across + uw[:, 1:] * self.down

    def nose_u(self, landmarks: Sequence[Sequence[float]] | Points) -> float:
        nose = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)[2]
        return float(np.dot(nose - self.origin, self.across)) / self.scale**2


def _pick(rng: np.random.Generator, items: Sequence[Rgb]) -> NDArray[np.float32]:
    return np.asarray(items[int(rng.integers(len(items)))], dtype=np.float32)


def _polygon_alpha(shape: tuple[int, ...], points: Points, soften: float) -> NDArray[np.float32]:
    """A [0, 1] coverage map of the polygon, anti-aliased and softened by `soften` px."""
    alpha = np.zeros(shape[:2], dtype=np.uint8)
    fixed = np.round(points * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(alpha, [fixed], 255, lineType=cv2.LINE_AA, shift=_SHIFT)
    out = alpha.astype(np.float32) / 255.0
    if soften > 0.3:
        return np.asarray(cv2.GaussianBlur(out, (0, 0), soften), dtype=np.float32)
    return out


def _blend(image: Image, layer: NDArray[np.float32], alpha: NDArray[np.float32]) -> Image:
    a = alpha[..., None]
    mixed = image.astype(np.float32) * (1.0 - a) + layer * a
    return np.ascontiguousarray(np.clip(mixed, 0, 255), dtype=np.uint8)


def _luma(image: Image, frame: FaceFrame) -> float:
    """Median brightness of the face around the nose: painted objects share its lighting."""
    centre = frame.to_image(np.array([[0.0, 0.6]]))[0]
    r = max(2, round(frame.scale * 0.6))
    x, y = round(centre[0]), round(centre[1])
    patch = image[max(0, y - r) : y + r, max(0, x - r) : x + r]
    return float(np.median(patch.mean(axis=2))) if patch.size else 128.0


def _lighting(rng: np.random.Generator, image: Image, frame: FaceFrame) -> float:
    """How bright to paint: mostly the face's own exposure, with some spread."""
    face = _luma(image, frame) / 140.0
    return float(np.clip(0.5 + 0.5 * face, 0.45, 1.15) * rng.uniform(0.85, 1.1))


def _grain(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> NDArray[np.float32]:
    return rng.normal(0.0, sigma, (*shape[:2], 1)).astype(np.float32)


def _shading(frame: FaceFrame, shape: tuple[int, ...], strength: float) -> NDArray[np.float32]:
    """Darker towards the sides of the face: a rounded object lit from the front."""
    height, width = shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    rel = np.stack([xx - frame.origin[0], yy - frame.origin[1]], axis=-1)
    u = (rel @ frame.across.astype(np.float32)) / np.float32(frame.scale**2)
    return (1.0 - strength * np.clip(np.abs(u), 0, 1.3) ** 2)[..., None].astype(np.float32)


def package_image(name: str) -> Image:
    """An image shipped in insightface's data folder (t1.jpg, Tom_Hanks_54745.png, ...), RGB."""
    import insightface

    path = Path(insightface.__file__).parent / "data" / "images" / name
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileNotFoundError(path)
    return np.ascontiguousarray(bgr[:, :, ::-1])


@lru_cache(maxsize=1)
def mask_textures() -> tuple[Image, ...]:
    """insightface's mask textures (black, blue, green, white), RGB."""
    import insightface

    folder = Path(insightface.__file__).parent / "data" / "images"
    textures: list[Image] = []
    for path in sorted(folder.glob("mask_*.jpg")):
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is not None:
            textures.append(np.ascontiguousarray(bgr[:, :, ::-1], dtype=np.uint8))
    if not textures:
        raise FileNotFoundError(f"no mask_*.jpg in {folder}")
    return tuple(textures)


def _pattern(
    rng: np.random.Generator, shape: tuple[int, ...], period: float
) -> NDArray[np.float32]:
    """A two-colour print (stripes, checks or dots) for cloth masks and hats."""
    height, width = shape[:2]
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    p = max(period, 2.0)
    kind = int(rng.integers(3))
    if kind == 0:
        on = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / p) > 0
    elif kind == 1:
        on = (np.floor(xx / p) + np.floor(yy / p)) % 2 == 0
    else:
        on = ((xx % p - p / 2) ** 2 + (yy % p - p / 2) ** 2) < (p / 3.5) ** 2
    a, b = _pick(rng, _MASK_COLOURS), _pick(rng, _MASK_COLOURS)
    return np.where(on[..., None], a, b).astype(np.float32)


def face_mask(
    image: Image,
    landmarks: Sequence[Sequence[float]] | Points,
    rng: np.random.Generator,
    *,
    style: str | None = None,
    colour: Rgb | None = None,
) -> Image:
    """A mask over nose and mouth down to the chin.

    `style`: "texture" (one of insightface's mask photos), "solid" (a plain colour with
    pleats), "pattern" (a printed cloth mask), "box" (a texture pasted as an upright
    rectangle from just below the nose tip to the chin, the way `etl.images` paints one);
    None picks one. `colour` forces a solid colour.
    """
    frame = FaceFrame.from_landmarks(landmarks)
    if style is None:
        style = str(rng.choice(["texture", "solid", "pattern", "box"], p=[0.35, 0.35, 0.15, 0.15]))
    if colour is not None:
        style = "solid"
    shape = image.shape
    if style == "box":
        return _box_mask(image, frame, landmarks, rng)
    centre = frame.nose_u(landmarks) * rng.uniform(0.3, 0.8)
    top = rng.uniform(0.2, 0.62)
    bottom = rng.uniform(1.65, 2.05)
    half = rng.uniform(0.88, 1.12)
    t = np.linspace(0, np.pi, 40)
    lower = np.stack([centre + half * np.cos(t), top + (bottom - top) * np.sin(t) ** 0.8], 1)
    peak = rng.uniform(0.0, 0.15)
    s = np.linspace(-1, 1, 20)
    upper = np.stack([centre - half * s, top + 0.05 - peak * (1 - s**2)], 1)
    outline = frame.to_image(np.vstack([lower, upper]))
    alpha = _polygon_alpha(shape, outline, soften=max(0.4, frame.scale * 0.015))
    light = _lighting(rng, image, frame)
    if style == "texture":
        texture = mask_textures()[int(rng.integers(len(mask_textures())))]
        th, tw = texture.shape[:2]
        quad = frame.to_image(
            np.array(
                [[centre - half, top - peak], [centre + half, top - peak], [centre - half, bottom]]
            )
        )
        src = np.array([[0, 0], [tw, 0], [0, th]], dtype=np.float32)
        matrix = cv2.getAffineTransform(src, quad.astype(np.float32))
        layer = cv2.warpAffine(
            texture, matrix, (shape[1], shape[0]), flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT,
        ).astype(np.float32)  # fmt: skip
    else:
        if style == "pattern":
            layer = _pattern(rng, shape, frame.scale * rng.uniform(0.12, 0.4))
        else:
            fill = (
                np.asarray(colour, np.float32) if colour is not None else _pick(rng, _MASK_COLOURS)
            )
            layer = np.broadcast_to(fill, shape).astype(np.float32).copy()
            pleats = frame.to_image(
                np.array(
                    [[centre - half * 0.9, w] for w in np.linspace(top + 0.35, bottom - 0.5, 3)]
                )
            )
            for px, py in pleats:
                end = frame.to_image(np.array([[centre + half * 0.9, 0.0]]))[0]
                y_end = py + (end[1] - frame.to_image(np.array([[centre - half * 0.9, 0.0]]))[0][1])
                cv2.line(
                    layer, (round(px), round(py)), (round(end[0]), round(y_end)),
                    (fill * 0.8).tolist(), max(1, round(frame.scale * 0.03)), cv2.LINE_AA,
                )  # fmt: skip
    layer = layer * light * _shading(frame, shape, rng.uniform(0.05, 0.3))
    layer += _grain(rng, shape, rng.uniform(0.5, 4.0))
    opacity = 1.0 if colour is not None else rng.uniform(0.92, 1.0)
    out = _blend(image, layer, alpha * opacity)
    if rng.random() < 0.6:
        out = _ear_loops(out, frame, centre, half, top, rng, layer)
    return out


def _ear_loops(
    image: Image,
    frame: FaceFrame,
    centre: float,
    half: float,
    top: float,
    rng: np.random.Generator,
    layer: NDArray[np.float32],
) -> Image:
    out = image.copy()
    thickness = max(1, round(frame.scale * rng.uniform(0.02, 0.05)))
    probe = frame.to_image(np.array([[centre, top + 0.6]]))[0]
    y, x = (
        int(np.clip(round(v), 0, n - 1)) for v, n in zip(probe[::-1], image.shape[:2], strict=True)
    )
    colour = np.clip(layer[y, x], 0, 255).tolist()
    for side in (-1.0, 1.0):
        pts = frame.to_image(
            np.array(
                [
                    [centre + side * half, top + 0.1],
                    [side * 1.25, -0.05],
                    [centre + side * half * 0.95, top + 0.9],
                    [side * 1.25, 0.55],
                ]
            )
        )
        for a, b in ((pts[0], pts[1]), (pts[2], pts[3])):
            cv2.line(
                out,
                (round(a[0]), round(a[1])),
                (round(b[0]), round(b[1])),
                colour,
                thickness,
                cv2.LINE_AA,
            )
    return out


def _box_mask(
    image: Image,
    frame: FaceFrame,
    landmarks: Sequence[Sequence[float]] | Points,
    rng: np.random.Generator,
    texture: Image | None = None,
) -> Image:
    """An upright rectangle from just below the nose tip to the chin, cheek to cheek."""
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    d = frame.scale
    centre_x = float(pts[:2, 0].mean())
    x0 = max(0, round(centre_x - rng.uniform(0.95, 1.2) * d))
    x1 = min(image.shape[1], round(centre_x + rng.uniform(0.95, 1.2) * d))
    y0 = max(0, round(pts[2, 1] + rng.uniform(-0.25, 0.15) * d))
    chin = frame.to_image(np.array([[0.0, 1.85]]))[0][1]
    y1 = min(image.shape[0], round(chin + rng.uniform(-0.1, 0.3) * d))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return image.copy()
    if texture is None:
        texture = mask_textures()[int(rng.integers(len(mask_textures())))]
    out = image.copy()
    out[y0:y1, x0:x1] = cv2.resize(texture, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out


def box_mask(image: Image, landmarks: Sequence[Sequence[float]] | Points, texture: Image) -> Image:
    """`texture` pasted from 0.1 IOD below the nose tip to the chin (deterministic)."""
    frame = FaceFrame.from_landmarks(landmarks)
    pts = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    d = frame.scale
    centre_x = float(pts[:2, 0].mean())
    x0, x1 = max(0, round(centre_x - 1.05 * d)), min(image.shape[1], round(centre_x + 1.05 * d))
    y0 = max(0, round(pts[2, 1] + 0.1 * d))
    y1 = min(image.shape[0], round(frame.to_image(np.array([[0.0, 1.9]]))[0][1]))
    out = image.copy()
    out[y0:y1, x0:x1] = cv2.resize(texture, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out


def _lens(rng: np.random.Generator, big: bool) -> tuple[float, float, float, float, float]:
    """Half-width, top and bottom half-heights, squareness exponent, outer lift.

    Sunglasses lenses are big enough to hide the eye (a slit of tinted glass over an
    open eye is not something a person would call sunglasses)."""
    rx = rng.uniform(0.28, 0.42) if big else rng.uniform(0.24, 0.4)
    ry_top = rng.uniform(0.2, 0.3) if big else rng.uniform(0.15, 0.28)
    ry_bottom = ry_top * rng.uniform(0.9, 1.5)
    exponent = float(rng.choice([2.0, 2.0, 2.8, 4.0, 6.0]))
    lift = rng.uniform(-0.05, 0.08)
    return rx, ry_top, ry_bottom, exponent, lift


def _lens_outline(
    side: float, cy: float, lens: tuple[float, float, float, float, float], offset: float
) -> Points:
    rx, ry_top, ry_bottom, exponent, lift = lens
    t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    c, s = np.cos(t), np.sin(t)
    x = rx * np.sign(c) * np.abs(c) ** (2 / exponent)
    y = np.where(s > 0, ry_bottom, ry_top) * np.sign(s) * np.abs(s) ** (2 / exponent)
    # The outer half rises a little (cat-eye) or drops (aviator).
    y = y - lift * np.clip(x / rx, 0, 1)
    return np.stack([side * (offset + x), cy + y], 1)


def _spectacles(
    image: Image,
    landmarks: Sequence[Sequence[float]] | Points,
    rng: np.random.Generator,
    *,
    dark: bool,
) -> Image:
    frame = FaceFrame.from_landmarks(landmarks)
    shape = image.shape
    offset = rng.uniform(0.47, 0.53)
    cy = rng.uniform(0.0, 0.1)
    lens = _lens(rng, big=dark)
    outlines = [frame.to_image(_lens_outline(s, cy, lens, offset)) for s in (-1.0, 1.0)]
    soften = max(0.4, frame.scale * 0.01)
    if dark and rng.random() < 0.1:
        # One wrap-around shield across both eyes.
        t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        width, top, bottom = rng.uniform(0.8, 0.95), rng.uniform(0.17, 0.27), rng.uniform(0.2, 0.32)
        shield = np.stack(
            [width * np.cos(t), cy + np.where(np.sin(t) > 0, bottom, top) * np.sin(t)], 1
        )
        outlines = [frame.to_image(shield)]
    lens_alpha = np.maximum.reduce([_polygon_alpha(shape, o, soften) for o in outlines])
    out = image
    if dark:
        tint = _pick(rng, _LENS_COLOURS)
        mirrored = rng.random() < 0.12
        if mirrored:
            tint = np.asarray(rng.uniform(40, 140, 3), np.float32)
        layer = np.broadcast_to(tint, shape).astype(np.float32).copy()
        top_y, bottom_y = (frame.to_image(np.array([[0.0, cy + v]]))[0][1] for v in (-0.3, 0.3))
        rows = np.linspace(0, 1, shape[0], dtype=np.float32)
        ramp = np.clip((np.arange(shape[0]) - top_y) / max(bottom_y - top_y, 1), 0, 1)
        if rng.random() < 0.4:  # gradient lenses: darker at the top
            layer *= (0.75 + 0.7 * ramp[:, None, None]).astype(np.float32)
        del rows
        layer *= _lighting(rng, image, frame) if not mirrored else 1.0
        layer += _grain(rng, shape, rng.uniform(0.5, 3.0))
        opacity = rng.uniform(0.85, 1.0)
        out = _blend(out, layer, lens_alpha * opacity)
    else:
        tint = np.asarray(rng.uniform(150, 230, 3), np.float32)
        layer = np.broadcast_to(tint, shape).astype(np.float32)
        out = _blend(out, layer, lens_alpha * rng.uniform(0.0, 0.12))
    out = _glare(out, outlines, frame, rng)
    thickness_units = rng.uniform(0.02, 0.09) if dark else rng.uniform(0.015, 0.07)
    thickness = max(1, round(frame.scale * thickness_units))
    colour = _pick(rng, _FRAME_COLOURS) * (
        _lighting(rng, image, frame) if rng.random() < 0.5 else 1.0
    )
    out = out.copy()
    if not (dark and rng.random() < 0.2):  # rimless sunglasses have no frame line
        for outline in outlines:
            fixed = np.round(outline * (1 << _SHIFT)).astype(np.int32)
            cv2.polylines(out, [fixed], True, colour.tolist(), thickness, cv2.LINE_AA, _SHIFT)
    rx, ry_top = lens[0], lens[1]
    bridge = frame.to_image(np.array([[-(offset - rx), cy - ry_top * 0.6], [0, cy - ry_top * 0.8],
                                      [offset - rx, cy - ry_top * 0.6]]))  # fmt: skip
    temples = [
        frame.to_image(np.array([[s * (offset + rx), cy - ry_top * 0.5], [s * 1.1, cy - 0.05]]))
        for s in (-1.0, 1.0)
    ]
    for line in (bridge, *temples):
        fixed = np.round(line * (1 << _SHIFT)).astype(np.int32)
        cv2.polylines(out, [fixed], False, colour.tolist(), thickness, cv2.LINE_AA, _SHIFT)
    return out


def _glare(
    image: Image, outlines: list[Points], frame: FaceFrame, rng: np.random.Generator
) -> Image:
    """A soft diagonal reflection on the lenses, sometimes."""
    if rng.random() > 0.4:
        return image
    shape = image.shape
    inside = np.maximum.reduce([_polygon_alpha(shape, o, 0.5) for o in outlines])
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    angle = rng.uniform(0.5, 1.2)
    phase = rng.uniform(0, 2 * np.pi)
    band = np.cos((xx * np.cos(angle) + yy * np.sin(angle)) / max(frame.scale * 0.25, 1) + phase)
    streak = np.clip(band, 0, 1) ** 4 * inside * rng.uniform(0.1, 0.4)
    layer = np.full(shape, 255.0, dtype=np.float32)
    return _blend(image, layer, streak.astype(np.float32))


def sunglasses(
    image: Image, landmarks: Sequence[Sequence[float]] | Points, rng: np.random.Generator
) -> Image:
    """Dark or mirrored lenses of a random shape over both eyes, with a frame most times."""
    return _spectacles(image, landmarks, rng, dark=True)


def clear_glasses(
    image: Image, landmarks: Sequence[Sequence[float]] | Points, rng: np.random.Generator
) -> Image:
    """A thin spectacle frame with clear (at most faintly tinted) lenses."""
    return _spectacles(image, landmarks, rng, dark=False)


def dark_sunglasses(image: Image, landmarks: Sequence[Sequence[float]] | Points) -> Image:
    """Plain opaque black oval lenses on a black frame (deterministic)."""
    frame = FaceFrame.from_landmarks(landmarks)
    out = image
    layer = np.zeros(image.shape, dtype=np.float32) + 12.0
    for side in (-1.0, 1.0):
        outline = frame.to_image(_lens_outline(side, 0.03, (0.33, 0.22, 0.27, 2.6, 0.0), 0.5))
        out = _blend(out, layer, _polygon_alpha(image.shape, outline, 0.5))
    bridge = frame.to_image(np.array([[-0.17, -0.08], [0.17, -0.08]]))
    out = out.copy()
    cv2.line(out, tuple(np.round(bridge[0]).astype(int)), tuple(np.round(bridge[1]).astype(int)),
             (12, 12, 12), max(1, round(frame.scale * 0.05)), cv2.LINE_AA)  # fmt: skip
    return out


def opaque_mask(
    image: Image, landmarks: Sequence[Sequence[float]] | Points, colour: Rgb = (0, 0, 0)
) -> Image:
    """A flat opaque surgical-style mask over nose and mouth to the chin (deterministic)."""
    return face_mask(image, landmarks, np.random.default_rng(0), colour=colour)


def hat(
    image: Image,
    landmarks: Sequence[Sequence[float]] | Points,
    rng: np.random.Generator,
    *,
    covers_brows: bool = True,
) -> Image:
    """A cap, beanie or brimmed hat whose lower edge covers the brows (or sits above them)."""
    frame = FaceFrame.from_landmarks(landmarks)
    shape = image.shape
    low, high = HAT_COVERS_BROWS if covers_brows else HAT_ABOVE_BROWS
    edge = rng.uniform(low, high)
    kind = int(rng.integers(3))  # 0 beanie, 1 cap, 2 brimmed hat
    half = rng.uniform(1.1, 1.35) if kind != 2 else rng.uniform(1.5, 1.9)
    sag = rng.uniform(-0.1, 0.12)
    s = np.linspace(-1, 1, 30)
    bottom = np.stack([half * s, edge + sag * (1 - s**2) + (0.25 * s**4 if kind == 0 else 0)], 1)
    t = np.linspace(0, np.pi, 30)
    crown = rng.uniform(1.6, 2.4)
    dome = np.stack([half * 0.95 * np.cos(t), edge - crown * np.sin(t) ** 0.7], 1)
    outline = frame.to_image(np.vstack([bottom, dome]))
    alpha = _polygon_alpha(shape, outline, soften=max(0.4, frame.scale * 0.015))
    if rng.random() < 0.25:
        layer = _pattern(rng, shape, frame.scale * rng.uniform(0.1, 0.35))
    else:
        layer = np.broadcast_to(_pick(rng, _HAT_COLOURS), shape).astype(np.float32).copy()
    if kind == 0:  # knit ribs
        yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
        rel = np.stack([xx - frame.origin[0], yy - frame.origin[1]], -1)
        u = rel @ frame.across.astype(np.float32) / np.float32(frame.scale**2)
        layer *= (1.0 + 0.12 * np.sin(u * 2 * np.pi / rng.uniform(0.06, 0.15)))[..., None]
    layer *= _lighting(rng, image, frame)
    layer += _grain(rng, shape, rng.uniform(1.0, 5.0))
    out = _blend(image, layer, alpha)
    if kind == 1 and covers_brows:  # a peak casts a shadow on the upper face
        shadow_outline = frame.to_image(
            np.vstack(
                [
                    bottom,
                    np.stack([half * s[::-1] * 0.9, (edge + rng.uniform(0.15, 0.4)) + 0 * s], 1),
                ]
            )
        )
        shadow = _polygon_alpha(shape, shadow_outline, frame.scale * 0.1) * rng.uniform(0.2, 0.5)
        out = _blend(out, np.zeros(shape, np.float32), shadow.astype(np.float32))
    return out


def render(
    image: Image, landmarks: Sequence[Sequence[float]] | Points, kind: str, seed: int
) -> Image:
    """One accessory of `kind` (see `KINDS`) drawn with its own seed."""
    rng = np.random.default_rng(seed)
    if kind == "face_mask":
        return face_mask(image, landmarks, rng)
    if kind == "sunglasses":
        return sunglasses(image, landmarks, rng)
    if kind == "glasses":
        return clear_glasses(image, landmarks, rng)
    if kind == "hat":
        return hat(image, landmarks, rng, covers_brows=True)
    if kind == "hat_high":
        return hat(image, landmarks, rng, covers_brows=False)
    raise ValueError(f"unknown accessory {kind!r}; expected one of {KINDS}")
