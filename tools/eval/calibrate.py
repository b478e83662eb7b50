"""`faceval calibrate quality DIR`: propose quality thresholds from captures known to be good.

A camera maker or an integrator collects selfies their device takes in normal use that a
person judged acceptable. Every image goes through the face detector and the quality
stage's models; for each judged metric the proposal is the `percentile` (a lower bound)
or the 100 - `percentile` (an upper bound) of those scores, so about that share of good
captures would fail each bound. The output is a table and the FACEVAL_* lines to set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.imaging import decode_rgb
from shared.runtime import analyze_image
from shared.settings import Settings
from tools.eval.datasets import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Bound:
    model: str
    value: str
    setting: str
    #: "min": scores below the bound fail; "max": scores above it fail.
    kind: str


BOUNDS: tuple[Bound, ...] = (
    Bound("classic_metrics", "sharpness", "quality_min_sharpness", "min"),
    Bound("classic_metrics", "brightness", "quality_min_brightness", "min"),
    Bound("classic_metrics", "brightness", "quality_max_brightness", "max"),
    Bound("classic_metrics", "contrast", "quality_min_contrast", "min"),
    Bound("classic_metrics", "blur_score", "quality_max_blur_score", "max"),
    Bound("classic_metrics", "svd_score", "quality_max_svd_score", "max"),
    Bound("classic_metrics", "colorfulness", "quality_min_colorfulness", "min"),
    Bound("brisque", "score", "quality_max_brisque", "max"),
    Bound("niqe", "score", "quality_max_niqe", "max"),
    Bound("liqe", "score", "quality_min_liqe", "min"),
    Bound("topiq", "score", "quality_min_topiq", "min"),
)


@dataclass(frozen=True)
class Proposal:
    bound: Bound
    count: int
    low: float
    median: float
    high: float
    proposed: float
    current: float | None
    #: Share of these good captures the current setting rejects (None: not judged now).
    current_rejects: float | None


def collect(folder: Path, settings: Settings) -> tuple[list[dict[str, dict[str, float]]], int]:
    """Quality scores of every image with a detected face; and how many had none."""
    from services.face_detector.stage import build_models as detector_models
    from services.quality.stage import build_models as quality_models

    detector, quality = detector_models(settings), quality_models(settings)
    rows, skipped = [], 0
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        image = decode_rgb(path.read_bytes())
        _, _, _, face, _ = analyze_image(detector, image, None)
        if face is None:
            skipped += 1
            continue
        _, scores, _, _, _ = analyze_image(quality, image, face)
        rows.append(
            {key: entry["values"] for key, entry in scores.items() if entry["status"] == "ok"}
        )
    return rows, skipped


def propose(
    rows: Sequence[Mapping[str, Mapping[str, float]]], settings: Settings, percentile: float
) -> list[Proposal]:
    proposals = []
    for bound in BOUNDS:
        values = np.asarray(
            [r[bound.model][bound.value] for r in rows if bound.value in r.get(bound.model, {})]
        )
        if values.size == 0:
            continue
        q = percentile if bound.kind == "min" else 100 - percentile
        current = getattr(settings, bound.setting)
        rejects = None
        if current is not None:
            failing = values < current if bound.kind == "min" else values > current
            rejects = float(failing.mean())
        proposals.append(
            Proposal(
                bound,
                int(values.size),
                float(values.min()),
                float(np.median(values)),
                float(values.max()),
                float(np.percentile(values, q)),
                current,
                rejects,
            )
        )
    return proposals


def render(proposals: Sequence[Proposal], images: int, skipped: int, percentile: float) -> str:
    lines = [
        f"{images} captures with a face ({skipped} without one were skipped); each bound "
        f"proposed at percentile {percentile:g} (lower bounds) or {100 - percentile:g} (upper).",
        "",
        f"{'metric':<32}{'min':>10}{'median':>10}{'max':>10}{'current':>10}{'rejects':>9}"
        f"{'proposed':>11}",
    ]
    for p in proposals:
        name = f"{p.bound.model}.{p.bound.value} ({p.bound.kind})"
        current = "-" if p.current is None else f"{p.current:.4g}"
        rejects = "-" if p.current_rejects is None else f"{p.current_rejects:.0%}"
        lines.append(
            f"{name:<32}{p.low:>10.4g}{p.median:>10.4g}{p.high:>10.4g}{current:>10}"
            f"{rejects:>9}{p.proposed:>11.4g}"
        )
    lines += ["", "# environment for the quality workers:"]
    lines += [f"FACEVAL_{p.bound.setting.upper()}={p.proposed:.4g}" for p in proposals]
    if images < 100:
        lines += [
            "",
            f"note: {images} captures are few; percentiles from fewer than 100 are "
            "rough (collect a few hundred covering the lighting and devices in use).",
        ]
    return "\n".join(lines)
