"""The captures `faceval simulate` sends fail the way real ones do, and its budget holds."""

from __future__ import annotations

import numpy as np

from etl.images import dark_pairs, masked_pairs
from etl.simulate import Budget
from tools.samples import astronaut_pair


def test_masked_capture_covers_the_lower_face_only() -> None:
    near, _ = astronaut_pair()
    masked_near, _ = masked_pairs()[0]
    changed = np.any(masked_near != near, axis=2)
    rows = np.flatnonzero(changed.any(axis=1))
    assert changed.mean() > 0.03  # a real mask, not a speck
    # Nothing above the nose changes: the eyes stay visible, as with a real mask.
    assert rows.min() > near.shape[0] * 0.3


def test_dark_capture_is_underexposed() -> None:
    near, _ = astronaut_pair()
    dark_near, _ = dark_pairs()[0]
    assert dark_near.shape == near.shape
    assert dark_near.mean() < 0.25 * near.mean()


def test_budget_hands_out_exactly_the_requested_transactions() -> None:
    budget = Budget(3)
    assert [budget.take() for _ in range(5)] == [True, True, True, False, False]
