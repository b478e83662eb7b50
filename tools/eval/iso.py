"""ISO/IEC 30107-3 presentation-attack detection metrics from per-image scores.

Convention: a higher score means "more attack-like"; an image is classified as an attack
when its score is at or above the threshold.
- APCER (per attack type, i.e. PAI species): the share of that type's attacks classified
  as bona fide. The standard asks for each species and for the worst one (the maximum).
- BPCER: the share of bona fide presentations classified as attacks.
- APCER at BPCER = x: the lowest threshold whose BPCER is at most x, and the APCER there.
  BPCER at APCER = x (BPCER20 for 5 %, BPCER100 for 1 %) is given too.
Images where no face was found are failures to acquire: counted, not scored.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def apcer(attack: FloatArray, threshold: float) -> float:
    return float((attack < threshold).mean()) if attack.size else float("nan")


def bpcer(bona: FloatArray, threshold: float) -> float:
    return float((bona >= threshold).mean()) if bona.size else float("nan")


def candidate_thresholds(*groups: FloatArray) -> FloatArray:
    """Every threshold at which some error rate changes: each score, and just above each."""
    scores = np.concatenate([g for g in groups if g.size]) if groups else np.zeros(0)
    if scores.size == 0:
        return np.array([0.5])
    values = np.unique(np.concatenate([scores, np.nextafter(scores, np.inf)]))
    return np.asarray(values, dtype=np.float64)


@dataclass(frozen=True)
class OperatingPoint:
    threshold: float
    apcer_by_type: Mapping[str, float]
    apcer_max: float
    bpcer: float


@dataclass(frozen=True)
class PadMetrics:
    threshold: float
    bona_fide: int
    attacks: Mapping[str, int]
    at_threshold: OperatingPoint
    #: target -> the operating point with BPCER <= target (lowest such threshold).
    at_bpcer: Mapping[float, OperatingPoint]
    #: target -> the operating point with the worst-species APCER <= target (highest).
    at_apcer: Mapping[float, OperatingPoint]
    eer: float
    eer_threshold: float
    recommended: OperatingPoint
    recommended_rule: str
    failures_to_acquire: Mapping[str, int] = field(default_factory=dict)


def operating_point(
    bona: FloatArray, attacks: Mapping[str, FloatArray], threshold: float
) -> OperatingPoint:
    by_type = {kind: apcer(scores, threshold) for kind, scores in sorted(attacks.items())}
    return OperatingPoint(
        threshold=float(threshold),
        apcer_by_type=by_type,
        apcer_max=max(by_type.values()) if by_type else float("nan"),
        bpcer=bpcer(bona, threshold),
    )


def _bpcer_curve(bona: FloatArray, candidates: FloatArray) -> FloatArray:
    below = np.searchsorted(np.sort(bona), candidates, side="left")
    return np.asarray(1.0 - below / bona.size, dtype=np.float64)


def _apcer_curve(attack: FloatArray, candidates: FloatArray) -> FloatArray:
    below = np.searchsorted(np.sort(attack), candidates, side="left")
    return np.asarray(below / attack.size, dtype=np.float64)


def threshold_at_bpcer(bona: FloatArray, candidates: FloatArray, target: float) -> float:
    """The lowest threshold with BPCER <= target (the most attacks caught for that cost)."""
    ok = candidates[_bpcer_curve(bona, candidates) <= target + 1e-12]
    return float(ok.min()) if ok.size else float(np.nextafter(candidates.max(), np.inf))


def threshold_at_apcer(
    attacks: Mapping[str, FloatArray], candidates: FloatArray, target: float
) -> float:
    """The highest threshold whose worst-species APCER is <= target."""
    worst = np.max([_apcer_curve(a, candidates) for a in attacks.values()], axis=0)
    ok = candidates[worst <= target + 1e-12]
    return float(ok.max()) if ok.size else float(candidates.min())


def evaluate(
    bona: Sequence[float],
    attacks: Mapping[str, Sequence[float]],
    threshold: float,
    targets: Sequence[float] = (0.05, 0.01),
    recommend_bpcer: float = 0.05,
    failures_to_acquire: Mapping[str, int] | None = None,
) -> PadMetrics:
    bona_a = np.asarray(bona, dtype=np.float64)
    attack_a = {k: np.asarray(v, dtype=np.float64) for k, v in attacks.items() if len(v)}
    if bona_a.size == 0 or not attack_a:
        raise ValueError("PAD metrics need scored bona fide images and scored attacks")
    pooled = np.concatenate(list(attack_a.values()))
    candidates = candidate_thresholds(bona_a, pooled)
    at_bpcer = {
        t: operating_point(bona_a, attack_a, threshold_at_bpcer(bona_a, candidates, t))
        for t in targets
    }
    at_apcer = {
        t: operating_point(bona_a, attack_a, threshold_at_apcer(attack_a, candidates, t))
        for t in targets
    }
    apcers, bpcers = _apcer_curve(pooled, candidates), _bpcer_curve(bona_a, candidates)
    best = int(np.argmin(np.abs(apcers - bpcers)))
    eer_t = float(candidates[best])
    eer = (apcers[best] + bpcers[best]) / 2
    recommended = operating_point(
        bona_a, attack_a, threshold_at_bpcer(bona_a, candidates, recommend_bpcer)
    )
    return PadMetrics(
        threshold=threshold,
        bona_fide=int(bona_a.size),
        attacks={k: int(v.size) for k, v in sorted(attack_a.items())},
        at_threshold=operating_point(bona_a, attack_a, threshold),
        at_bpcer=at_bpcer,
        at_apcer=at_apcer,
        eer=float(eer),
        eer_threshold=float(eer_t),
        recommended=recommended,
        recommended_rule=f"lowest threshold with BPCER <= {recommend_bpcer:.0%}",
        failures_to_acquire=dict(failures_to_acquire or {}),
    )


def det_points(bona: FloatArray, attack: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(APCER, BPCER) over every threshold, for a DET curve."""
    candidates = candidate_thresholds(bona, attack)
    return _apcer_curve(attack, candidates), _bpcer_curve(bona, candidates)
