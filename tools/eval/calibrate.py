"""`faceval calibrate quality DIR...`: propose quality limits from captures known to be good.

A camera maker or an integrator collects selfies their device takes in normal use that a
person judged acceptable. Every image goes through the production face detector stage
(detector, framing, head pose); those it passes (the only ones the quality stage sees in
production) go through the quality stage's production models. The photos, sorted by path,
are split in two: the even positions calibrate, the odd ones are held out. For each
judged metric the proposal is the calibration half's `percentile` (a lower bound) or
100 - `percentile` (an upper bound), so about that share of good captures fails each
bound; the held-out half then shows the share each proposed bound, and all of them
together, reject. The output is a table and the FACEVAL_* lines to set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from shared.analysis import Face, Image, Model, ModelUnavailable
from shared.imaging import decode_rgb
from shared.models_registry import ModelEntry, Registry, limit_values, scorer_threshold
from shared.settings import Settings
from tools.eval.datasets import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Bound:
    """One judged quality score: a scorer model's threshold or a limit of a model with
    several (manifest `scorer` and `limits` tables)."""

    #: The manifest entry it belongs to (its value resolves through the settings).
    entry: ModelEntry
    value: str
    #: "min": scores below the bound fail; "max": scores above it fail.
    kind: str
    #: The limit's name; None for a scorer model's threshold.
    limit: str | None = None

    @property
    def model(self) -> str:
        return self.entry.name

    def current(self, settings: Settings) -> float | None:
        if self.limit is None:
            return scorer_threshold(self.entry, settings)
        return limit_values(self.entry, settings)[self.limit]

    @property
    def env_name(self) -> str:
        """The nested setting, which wins over the older flat one the manifest names."""
        if self.limit is None:
            return f"FACEVAL_MODELS__{self.model.upper()}__THRESHOLD"
        return f"FACEVAL_MODELS__{self.model.upper()}__LIMITS__{self.limit.upper()}"


def bounds(settings: Settings) -> list[Bound]:
    """Every judged score of the quality stage, from the manifest: the limits of its
    models with several (classic metrics, BRISQUE, NIQE), then its scorer models (LIQE,
    TOPIQ)."""
    manifest = Registry.from_settings(settings).manifest
    quality = [e for e in manifest if e.stage == "quality"]
    return [
        *(
            Bound(e, limit.value, "min" if limit.reject == "below" else "max", name)
            for e in quality
            for name, limit in e.limits.items()
        ),
        *(
            Bound(e, e.scorer.value, "min" if e.scorer.reject == "below" else "max")
            for e in quality
            if e.scorer is not None
        ),
    ]


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
    #: Share of the held-out captures the proposed bound rejects (None: no held-out half).
    holdout_rejects: float | None = None


Scores = dict[str, dict[str, float]]


def run_models(
    models: Sequence[Model], image: Image, face: Face | None
) -> tuple[list[tuple[str, str | None]], Scores, Face | None]:
    """A stage's models on one image, as the runtime runs them: (rejections as (code,
    subject), scores of the models that ran, the face handed on)."""
    rejections: list[tuple[str, str | None]] = []
    scores: Scores = {}
    for model in models:
        try:
            result = model.analyze(image, face)
        except ModelUnavailable:
            continue
        scores[model.key] = {k: float(v) for k, v in result.scores.items()}
        rejections += [(r.code, r.subject) for r in result.rejections]
        if result.face is not None:
            face = result.face
    return rejections, scores, face


def image_paths(folders: Sequence[Path]) -> list[Path]:
    return sorted(
        p
        for folder in folders
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
    )


def collect(folder: Path | Sequence[Path], settings: Settings) -> tuple[list[Scores], int]:
    """Quality scores of every image the detector stage passes, in path order; and how
    many it did not pass (no face, framing or head pose)."""
    from services.face_detector.stage import build_models as detector_models
    from services.quality.stage import build_models as quality_models

    folders = [folder] if isinstance(folder, Path) else list(folder)
    detector, quality = detector_models(settings), quality_models(settings)
    rows, skipped = [], 0
    for path in image_paths(folders):
        image = decode_rgb(path.read_bytes())
        rejected, _, face = run_models(detector, image, None)
        if face is None or rejected:
            skipped += 1
            continue
        rows.append(run_models(quality, image, face)[1])
    return rows, skipped


def split(rows: Sequence[Scores]) -> tuple[list[Scores], list[Scores]]:
    """(calibration half, held-out half): even and odd positions."""
    return list(rows[0::2]), list(rows[1::2])


def _fails(values: np.ndarray, bound: Bound, limit: float) -> np.ndarray:
    return values < limit if bound.kind == "min" else values > limit


def _values(rows: Sequence[Mapping[str, Mapping[str, float]]], bound: Bound) -> np.ndarray:
    return np.asarray(
        [r[bound.model][bound.value] for r in rows if bound.value in r.get(bound.model, {})]
    )


def holdout(proposals: list[Proposal], rows: Sequence[Scores]) -> tuple[list[Proposal], float]:
    """Each proposal with the share of `rows` it rejects; and the share any of them does."""
    if not rows:
        return proposals, 0.0
    failing = np.zeros(len(rows), dtype=bool)
    checked = []
    for p in proposals:
        present = [bool(p.bound.value in r.get(p.bound.model, {})) for r in rows]
        values = _values(rows, p.bound)
        fails = _fails(values, p.bound, p.proposed)
        failing[np.flatnonzero(present)] |= fails
        share = float(fails.mean()) if values.size else None
        checked.append(replace(p, holdout_rejects=share))
    return checked, float(failing.mean())


def propose(
    rows: Sequence[Mapping[str, Mapping[str, float]]], settings: Settings, percentile: float
) -> list[Proposal]:
    proposals = []
    for bound in bounds(settings):
        values = _values(rows, bound)
        if values.size == 0:
            continue
        q = percentile if bound.kind == "min" else 100 - percentile
        current = bound.current(settings)
        rejects = None
        if current is not None:
            rejects = float(_fails(values, bound, current).mean())
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


def render(
    proposals: Sequence[Proposal],
    images: int,
    skipped: int,
    percentile: float,
    holdout_images: int = 0,
    holdout_any: float | None = None,
) -> str:
    lines = [
        f"{images} captures passed the detector stage ({skipped} did not and were skipped); "
        f"each bound proposed at percentile {percentile:g} (lower bounds) or "
        f"{100 - percentile:g} (upper).",
        "",
        f"{'metric':<32}{'min':>10}{'median':>10}{'max':>10}{'current':>10}{'rejects':>9}"
        f"{'proposed':>11}{'held-out':>10}",
    ]
    for p in proposals:
        name = f"{p.bound.model}.{p.bound.value} ({p.bound.kind})"
        current = "-" if p.current is None else f"{p.current:.4g}"
        rejects = "-" if p.current_rejects is None else f"{p.current_rejects:.1%}"
        held = "-" if p.holdout_rejects is None else f"{p.holdout_rejects:.1%}"
        lines.append(
            f"{name:<32}{p.low:>10.4g}{p.median:>10.4g}{p.high:>10.4g}{current:>10}"
            f"{rejects:>9}{p.proposed:>11.4g}{held:>10}"
        )
    if holdout_any is not None:
        lines += [
            "",
            f"held out: {holdout_images} captures (odd positions; the bounds come from the "
            f"even ones); all proposed bounds together reject {holdout_any:.1%} of them.",
        ]
    lines += ["", "# environment for the quality workers:"]
    lines += [f"{p.bound.env_name}={p.proposed:.4g}" for p in proposals]
    if images < 100:
        lines += [
            "",
            f"note: {images} captures are few; percentiles from fewer than 100 are "
            "rough (collect a few hundred covering the lighting and devices in use).",
        ]
    return "\n".join(lines)


def calibrate_quality(folders: Sequence[Path], settings: Settings, percentile: float) -> str:
    """The whole command: collect, calibrate on one half, check on the other, render."""
    rows, skipped = collect(folders, settings)
    if not rows:
        raise ValueError(f"no image in {', '.join(map(str, folders))} passed the detector stage")
    if len(rows) < 20:
        return render(propose(rows, settings, percentile), len(rows), skipped, percentile)
    calibration, held_out = split(rows)
    proposals, any_share = holdout(propose(calibration, settings, percentile), held_out)
    return render(proposals, len(calibration), skipped, percentile, len(held_out), any_share)
