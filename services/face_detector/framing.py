"""Framing rules: which detected face is the subject, and whether the capture frames it.

Pure decisions on detector output (faces in, the main face and rejections out), the same
whichever network found the faces. Limits were set on real photos (issue 12): 965
`masks/without_mask` photos (tight crops and scenes) and 998 LFW news photos, where 17 %
of the images hold a second face, nearly always a bystander (docs/models.md, Framing).

Per image:
- the main face is the most central of the faces at least `_COMPARABLE` of the largest
  face's size (size = square root of the box area): a selfie's subject is the large,
  central face, and of two faces of about the same size the off-centre one is the
  bystander;
- another face rejects (`multiple_faces`) only when it could be a second person
  presenting: at least `second_face_min_size` of the main face's size, detected with at
  least `second_face_min_score`, fully in the frame (its box away from the border and its
  predicted outline inside) and not mostly hidden behind the main face. Other faces are
  listed in `details["faces"]` with why they were not counted;
- `face_too_small`: the main face under `min_face_px` on its shorter box side, or under
  `min_face_ratio` of the image height. The ratio is a floor low enough for a far capture
  (the far face is smaller by design); whether far is smaller than near is a pair rule,
  `near_far_framing`;
- `face_cut_off`: the face's outline predicted from the landmarks runs more than
  `border_margin` of its size past the border, or a landmark lies outside the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from shared.analysis import Face, ModelResult, PairResult, Rejection

#: Reported in `details`; more than this is noise for a selfie.
MAX_REPORTED_FACES = 10
#: Faces within this share of the largest one's size compete for "main" by centrality.
_COMPARABLE = 0.8


def face_size(face: Face) -> float:
    """Square root of the box area: one length, robust to the box's aspect ratio."""
    return math.sqrt(max(face.width, 0.0) * max(face.height, 0.0))


def overflow(face: Face, width: int, height: int) -> float:
    """How far the face spills past the border, as a fraction of the face size.

    RetinaFace shrinks its box to the visible part of a cut face, so the box alone
    misses most cut-offs; the landmarks, which it still places sensibly, predict where
    the forehead, chin and cheeks should be. The factors are conservative (inside the
    box a full face gets): forehead one eye-to-mouth distance above the eyes, chin 0.8
    below the mouth, cheeks one inter-ocular distance beside the eyes' midpoint.
    """
    box = [
        -face.x / face.width,
        (face.x + face.width - width) / face.width,
        -face.y / face.height,
        (face.y + face.height - height) / face.height,
    ]
    if len(face.landmarks) != 5:
        return max(0.0, *box)
    pts = np.asarray(face.landmarks, dtype=np.float64)
    eyes, mouth = pts[:2].mean(axis=0), pts[3:].mean(axis=0)
    down, across = mouth - eyes, pts[1] - pts[0]
    extent_h = max(float(np.hypot(*down)) * 2.8, 1.0)
    extent_w = max(float(np.hypot(*across)) * 2.0, 1.0)
    marks = [
        (eyes - down, extent_h),
        (mouth + 0.8 * down, extent_h),
        (eyes - across, extent_w),
        (eyes + across, extent_w),
    ]
    for (px, py), extent in marks:
        box += [-px / extent, (px - width) / extent, -py / extent, (py - height) / extent]
    return max(0.0, *box)


def _covered(by: Face, face: Face) -> float:
    """Share of `face`'s box that `by`'s box covers."""
    ix = min(by.x + by.width, face.x + face.width) - max(by.x, face.x)
    iy = min(by.y + by.height, face.y + face.height) - max(by.y, face.y)
    area = face.width * face.height
    return max(0.0, ix) * max(0.0, iy) / area if area > 0 else 0.0


def _box(face: Face) -> dict[str, object]:
    return {
        "x": round(face.x, 1),
        "y": round(face.y, 1),
        "width": round(face.width, 1),
        "height": round(face.height, 1),
        "score": round(face.score, 4),
    }


def main_face(faces: Sequence[Face], width: int, height: int) -> Face:
    """The subject: the most central face among those of about the largest size."""
    largest = max(face_size(f) for f in faces)

    def off_centre(face: Face) -> float:
        cx, cy = face.x + face.width / 2, face.y + face.height / 2
        return math.hypot(cx / width - 0.5, cy / height - 0.5)

    return min((f for f in faces if face_size(f) >= _COMPARABLE * largest), key=off_centre)


@dataclass(frozen=True)
class FramingPolicy:
    """The framing decisions; defaults match `shared.settings` (see the module docstring).

    - `min_face_px` 64: below that the later models have too few pixels.
    - `min_face_ratio` 0.05 of the image height: a far capture at arm's length shows the
      face at 15-30 % of the height; under 5 % the photo is a scene, not a selfie.
    - `border_margin` 0.10: the predicted outline is an estimate; 10 % tolerates a crop
      that trims the hairline or the chin tip, while a face cut into the eyes or the mouth
      overflows 15-25 % (the unit tests' crops of the astronaut).
    - `second_face_min_size` 0.7, `second_face_min_score` 0.9, `second_face_border` 0.02
      (of the image side), `second_face_max_hidden` 0.3: on LFW the bystanders that are
      whole and in frame measure 0.5-0.75 of the subject; two people side by side in a
      selfie measure 0.8-1.25.
    """

    min_face_px: float = 64
    min_face_ratio: float = 0.05
    border_margin: float = 0.10
    second_face_min_size: float = 0.7
    second_face_min_score: float = 0.9
    second_face_border: float = 0.02
    second_face_max_hidden: float = 0.3

    def _why_not_presenting(self, face: Face, main: Face, width: int, height: int) -> list[str]:
        reasons = []
        if face_size(face) < self.second_face_min_size * face_size(main):
            reasons.append("smaller")
        if face.score < self.second_face_min_score:
            reasons.append("low_score")
        edge_x, edge_y = self.second_face_border * width, self.second_face_border * height
        at_border = (
            face.x < edge_x
            or face.y < edge_y
            or face.x + face.width > width - edge_x
            or face.y + face.height > height - edge_y
        )
        if at_border or overflow(face, width, height) > self.border_margin:
            reasons.append("at_border")
        if _covered(main, face) > self.second_face_max_hidden:
            reasons.append("behind_main_face")
        return reasons

    def judge(self, faces: Sequence[Face], width: int, height: int) -> ModelResult:
        """Choose the face later stages analyse and reject unusable framings."""
        faces = sorted(faces, key=lambda f: f.width * f.height, reverse=True)
        if not faces:
            scores = {
                "face_count": 0.0,
                "face_score": 0.0,
                "face_width_px": 0.0,
                "face_height_px": 0.0,
                "face_area_ratio": 0.0,
                "presenting_faces": 0.0,
                "second_face_size_ratio": 0.0,
            }
            return ModelResult(
                scores=scores,
                rejections=(Rejection("no_face", "No face was found in the image."),),
                details={"faces": []},
            )

        chosen = main_face(faces, width, height)
        others = [f for f in faces if f is not chosen]
        reported: list[dict[str, object]] = [{**_box(chosen), "main": True}]
        presenting: list[tuple[Face, float]] = []
        for face in others:
            ratio = face_size(face) / face_size(chosen)
            why = self._why_not_presenting(face, chosen, width, height)
            if not why:
                presenting.append((face, ratio))
            if len(reported) < MAX_REPORTED_FACES:
                reported.append(
                    {**_box(face), "size_ratio": round(ratio, 2), "ignored_because": why}
                )
        details: dict[str, object] = {"faces": reported}

        rejections: list[Rejection] = []
        if presenting:
            face, ratio = max(presenting, key=lambda p: p[1])
            rejections.append(
                Rejection(
                    "multiple_faces",
                    f"{len(presenting) + 1} people face the camera: another face, fully in "
                    f"the frame, is {ratio:.2f} times the main face's size (faces under "
                    f"{self.second_face_min_size:g} times or at the border are ignored).",
                )
            )

        short_side, dimension = (
            (chosen.width, "wide") if chosen.width <= chosen.height else (chosen.height, "tall")
        )
        if short_side < self.min_face_px:
            rejections.append(
                Rejection(
                    "face_too_small",
                    f"The face is {short_side:.0f} px {dimension}; at least "
                    f"{self.min_face_px:.0f} px is needed.",
                    subject="face_px",
                )
            )
        elif chosen.height / height < self.min_face_ratio:
            rejections.append(
                Rejection(
                    "face_too_small",
                    f"The face is {chosen.height / height:.1%} of the image height; at least "
                    f"{self.min_face_ratio:.1%} is needed.",
                    subject="face_ratio",
                )
            )

        spill = overflow(chosen, width, height)
        outside = [
            (px, py) for px, py in chosen.landmarks if not (0 <= px < width and 0 <= py < height)
        ]
        if spill > self.border_margin or outside:
            detail = (
                f"{len(outside)} facial landmark(s) lie outside the image."
                if outside
                else f"The face extends {spill:.0%} of its size past the image border; at "
                f"most {self.border_margin:.0%} is accepted."
            )
            rejections.append(Rejection("face_cut_off", detail))

        visible_w = min(chosen.x + chosen.width, width) - max(chosen.x, 0.0)
        visible_h = min(chosen.y + chosen.height, height) - max(chosen.y, 0.0)
        scores = {
            "face_count": float(len(faces)),
            "face_score": chosen.score,
            "face_width_px": chosen.width,
            "face_height_px": chosen.height,
            "face_area_ratio": max(0.0, visible_w) * max(0.0, visible_h) / (width * height),
            "presenting_faces": float(1 + len(presenting)),
            "second_face_size_ratio": max(
                (face_size(f) / face_size(chosen) for f in others), default=0.0
            ),
            "face_overflow": spill,
        }
        return ModelResult(
            scores=scores, rejections=tuple(rejections), face=chosen, details=details
        )


def near_far_framing(
    near: Face,
    far: Face,
    near_image: tuple[int, int] | None = None,
    far_image: tuple[int, int] | None = None,
    max_far_to_near: float = 1.25,
) -> PairResult:
    """The pair's size rule: the far face must not be larger than the near one.

    Sizes are `face_size` in pixels, or relative to the image (over the square root of
    its area) when both image sizes (width, height) are given, so that two captures at
    different resolutions compare. `max_far_to_near` 1.25 leaves room for the detector's
    box jitter between two captures at the same distance (median 4 %, up to 14 %,
    docs/models.md) and rejects a "near" capture taken clearly farther than the far one.
    """
    near_size, far_size = face_size(near), face_size(far)
    if near_image is not None and far_image is not None:
        near_size /= math.sqrt(near_image[0] * near_image[1])
        far_size /= math.sqrt(far_image[0] * far_image[1])
    ratio = far_size / max(near_size, 1e-9)
    rejections: tuple[Rejection, ...] = ()
    if ratio > max_far_to_near:
        rejections = (
            Rejection(
                "face_too_small",
                f"The far face is {ratio:.2f} times the near face's size; at most "
                f"{max_far_to_near:g} is accepted (the near capture must be the closer one).",
                subject="near_far_ratio",
            ),
        )
    return PairResult(scores={"far_to_near_face_size": ratio}, rejections=rejections)
