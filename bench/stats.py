"""Pure helpers shared by the benchmarks: percentiles, spreads over repetitions, ratios,
steady-state throughput, the machine note, tables and JSON. No I/O beyond writing files,
so tests/unit/test_bench_stats.py covers them without any server.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def percentile(values: Iterable[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between ranks (NumPy's default).

    None for no values: a benchmark that measured nothing must say so, not report 0.
    """
    ordered = sorted(values)
    if not ordered:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is outside 0-100")
    position = q / 100 * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(values_ms: Sequence[float]) -> dict[str, float | int | None]:
    """n, p50, p95, p99, mean, min and max of one run's latencies (milliseconds)."""
    return {
        "n": len(values_ms),
        "p50": _round(percentile(values_ms, 50)),
        "p95": _round(percentile(values_ms, 95)),
        "p99": _round(percentile(values_ms, 99)),
        "mean": _round(statistics.fmean(values_ms)) if values_ms else None,
        "min": _round(min(values_ms)) if values_ms else None,
        "max": _round(max(values_ms)) if values_ms else None,
    }


def spread(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """min / median / max of one figure over repetitions (None entries are dropped)."""
    kept = [v for v in values if v is not None]
    if not kept:
        return {"min": None, "median": None, "max": None, "reps": 0}
    return {
        "min": _round(min(kept)),
        "median": _round(statistics.median(kept)),
        "max": _round(max(kept)),
        "reps": len(kept),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return round(numerator / denominator, 4)


def meets(value: float | None, comparison: str, target: float) -> bool | None:
    """Whether `value` meets `comparison target` ("<=" or ">="); None if not measured."""
    if value is None:
        return None
    if comparison == "<=":
        return value <= target
    if comparison == ">=":
        return value >= target
    raise ValueError(f"unknown comparison {comparison!r}")


def steady_throughput(
    completions: Sequence[float], low: float = 0.1, high: float = 0.9
) -> float | None:
    """Completions per second between the `low` and `high` fractions of a burst.

    A burst through a staged pipeline has a fill (nothing finishes until the first item
    crosses every stage) and a drain (the last stages idle while the tail finishes);
    counting only the middle of the completions measures the saturated rate.
    `completions` are completion times in seconds, in any order.
    """
    ordered = sorted(completions)
    if len(ordered) < 3:
        return None
    first = max(0, math.floor(low * (len(ordered) - 1)))
    last = min(len(ordered) - 1, math.ceil(high * (len(ordered) - 1)))
    elapsed = ordered[last] - ordered[first]
    if last <= first or elapsed <= 0:
        return None
    return round((last - first) / elapsed, 4)


def makespan_throughput(started: float, completions: Sequence[float]) -> float | None:
    """Items per second from the first publish to the last completion (fill and drain in)."""
    if not completions:
        return None
    elapsed = max(completions) - started
    return round(len(completions) / elapsed, 4) if elapsed > 0 else None


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def source_commit() -> dict[str, Any]:
    """The commit the figures were measured on, and whether the tree had other changes."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, check=True, timeout=10).stdout.strip()  # fmt: skip
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=root, capture_output=True, text=True, check=True,
                                timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}
    return {"sha": sha, "dirty": bool(status.strip())}


def machine() -> dict[str, Any]:
    """What the figures were measured on, including how busy the machine already was."""
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib: float | None = None
    try:
        import psutil

        memory_gib = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    return {
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": memory_gib,
        "python": platform.python_version(),
        "load_average_at_start": load_average(),
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, right-aligned numbers, for the terminal."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in cells:
        pairs = enumerate(zip(row, widths, strict=True))
        padded = [c.rjust(w) if i else c.ljust(w) for i, (c, w) in pairs]
        lines.append("  ".join(padded))
    return "\n".join(lines)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)


def spread_cell(figure: Mapping[str, Any] | None, digits: int = 2) -> str:
    """'median (min-max)' for a spread() result."""
    if not figure or figure.get("median") is None:
        return "-"
    return f"{figure['median']:.{digits}f} ({figure['min']:.{digits}f}-{figure['max']:.{digits}f})"


def write_json(name: str, data: Mapping[str, Any], directory: Path = RESULTS) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)
