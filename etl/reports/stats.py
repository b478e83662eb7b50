"""Small statistics the reports need, written out so their numbers can be checked by hand."""

from __future__ import annotations

import math

#: Two-sided 95 %: the normal quantile for 0.975.
Z95 = 1.959963984540054


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float | None, float | None]:
    """Wilson score interval for a binomial proportion; (None, None) with no trials.

    Unlike the normal approximation it stays inside [0, 1] and behaves at 0 % and 100 %,
    which matters for small clients.
    """
    if trials <= 0:
        return None, None
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def rate_with_ci(successes: int, trials: int) -> dict[str, float | int | None]:
    low, high = wilson(successes, trials)
    return {
        "successes": successes,
        "trials": trials,
        "rate": successes / trials if trials else None,
        "ci95_low": low,
        "ci95_high": high,
    }
