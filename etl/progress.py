"""Progress bars for the long steps: on stderr, and only when it is a terminal."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm


@contextmanager
def progress_bar(total: int | None, step: str, unit: str = "rows") -> Iterator[Any]:
    # disable=None: tqdm turns itself off when stderr is not a TTY (CronJob logs stay clean).
    bar = tqdm(
        total=total,
        desc=step,
        unit=unit,
        unit_scale=True,
        file=sys.stderr,
        disable=None,
        leave=False,
        dynamic_ncols=True,
    )
    try:
        yield bar
    finally:
        bar.close()
