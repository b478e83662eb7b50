"""The report's charts as PNG files (matplotlib, Agg: no display needed)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

from matplotlib.figure import Figure

DPI = 110


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return path


def stage_percentiles(stages: list[dict[str, Any]], path: Path) -> Path:
    fig = Figure(figsize=(8, 4))
    ax = fig.add_subplot()
    labels = [f"{s['service']}\n{s['image']}" for s in stages]
    xs = range(len(stages))
    width = 0.2
    for i, (kind, pct) in enumerate(
        (("exec_ms", "p50"), ("exec_ms", "p95"), ("queue_ms", "p50"), ("queue_ms", "p95"))
    ):
        values = [s[kind][pct] or 0 for s in stages]
        ax.bar(
            [x + (i - 1.5) * width for x in xs], values, width, label=f"{kind.split('_')[0]} {pct}"
        )
    ax.set_xticks(list(xs), labels, fontsize=7)
    ax.set_ylabel("ms")
    ax.set_title("Execution and queue time per service and image")
    ax.legend(fontsize=7)
    return _save(fig, path)


def stage_shares(stages: list[dict[str, Any]], path: Path) -> Path:
    fig = Figure(figsize=(8, 3.5))
    ax = fig.add_subplot()
    labels = [f"{s['service']} {s['image']}" for s in stages]
    run = [100 * (s["exec_share_of_end_to_end"] or 0) for s in stages]
    wait = [100 * (s["queue_share_of_end_to_end"] or 0) for s in stages]
    ax.barh(labels, run, label="execution")
    ax.barh(labels, wait, left=run, label="queue")
    ax.set_xlabel("% of end-to-end time")
    ax.invert_yaxis()
    ax.legend(fontsize=7)
    ax.set_title("Share of end-to-end time")
    return _save(fig, path)


def trend(points: list[dict[str, Any]], path: Path, unit: str) -> Path:
    fig = Figure(figsize=(8, 3.5))
    ax = fig.add_subplot()
    series: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for p in points:
        series[f"{p['service']} {p['image']}"].append((p["bucket"], p["exec_p95"] or 0))
    for name, values in series.items():
        ax.plot([v[0][:16] for v in values], [v[1] for v in values], marker="o", ms=3, label=name)
    ax.set_ylabel("p95 execution ms")
    ax.set_title(f"Execution time p95 by {unit}")
    ax.tick_params(axis="x", labelrotation=45, labelsize=6)
    ax.legend(fontsize=6, ncol=2)
    return _save(fig, path)


def acceptance_by_client(per_client: list[dict[str, Any]], path: Path) -> Path:
    fig = Figure(figsize=(8, 3.5))
    ax = fig.add_subplot()
    shown = [c for c in per_client if c["acceptance_rate"] is not None]
    names = [str(c["client"])[:18] for c in shown]
    rates = [100 * c["acceptance_rate"] for c in shown]
    low = [r - 100 * c["ci95_low"] for r, c in zip(rates, shown, strict=True)]
    high = [100 * c["ci95_high"] - r for r, c in zip(rates, shown, strict=True)]
    ax.errorbar(names, rates, yerr=[low, high], fmt="o", capsize=4)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% accepted (95% CI)")
    ax.set_title("Acceptance rate per client")
    ax.tick_params(axis="x", labelrotation=30, labelsize=7)
    return _save(fig, path)


def acceptance_over_time(daily: list[dict[str, Any]], path: Path) -> Path:
    fig = Figure(figsize=(8, 3.5))
    ax = fig.add_subplot()
    series: dict[str, list[tuple[str, float]]] = defaultdict(list)
    for d in daily:
        if d["acceptance_rate"] is not None:
            series[str(d["client"])[:18]].append((d["day"], 100 * d["acceptance_rate"]))
    for name, values in series.items():
        ax.plot([v[0] for v in values], [v[1] for v in values], marker="o", label=name)
    ax.set_ylim(0, 100)
    ax.set_ylabel("% accepted")
    ax.set_title("Acceptance rate per client and day")
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    ax.legend(fontsize=7)
    return _save(fig, path)


def rejections(by_reason: list[dict[str, Any]], path: Path) -> Path:
    fig = Figure(figsize=(8, 3.5))
    ax = fig.add_subplot()
    labels = [f"{r['reason']} ({r['stage']})" for r in by_reason]
    ax.barh(labels, [r["count"] for r in by_reason])
    ax.invert_yaxis()
    ax.set_xlabel("rejections")
    ax.set_title("Rejections by reason (deciding stage)")
    return _save(fig, path)


def success_by_attempt(by_attempt: list[dict[str, Any]], path: Path) -> Path:
    fig = Figure(figsize=(8, 3.5))
    ax = fig.add_subplot()
    xs = [a["attempt_number"] for a in by_attempt]
    rates = [100 * (a["success"]["rate"] or 0) for a in by_attempt]
    low = [
        r - 100 * (a["success"]["ci95_low"] or 0) for r, a in zip(rates, by_attempt, strict=True)
    ]
    high = [
        100 * (a["success"]["ci95_high"] or 0) - r for r, a in zip(rates, by_attempt, strict=True)
    ]
    ax.errorbar(xs, rates, yerr=[low, high], fmt="o-", capsize=4)
    ax.set_xticks(xs)
    ax.set_ylim(0, 100)
    ax.set_xlabel("attempt number within the process")
    ax.set_ylabel("% accepted (95% CI)")
    ax.set_title("Success probability by attempt number")
    return _save(fig, path)


def attempts_distribution(distribution: list[dict[str, Any]], path: Path) -> Path:
    fig = Figure(figsize=(8, 3.5))
    ax = fig.add_subplot()
    outcomes = sorted({d["outcome"] for d in distribution})
    attempts = sorted({d["attempts"] for d in distribution})
    bottom = [0] * len(attempts)
    for outcome in outcomes:
        counts = {d["attempts"]: d["processes"] for d in distribution if d["outcome"] == outcome}
        values = [counts.get(a, 0) for a in attempts]
        ax.bar([str(a) for a in attempts], values, bottom=bottom, label=outcome)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xlabel("attempts until the outcome")
    ax.set_ylabel("processes")
    ax.set_title("Attempts per user and process")
    ax.legend(fontsize=7)
    return _save(fig, path)


def draw_all(report: dict[str, Any], directory: Path) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    b, a, r = report["bottlenecks"], report["acceptance"], report["retries"]
    return {
        "stage_percentiles": stage_percentiles(b["stages"], directory / "stage_percentiles.png"),
        "stage_shares": stage_shares(b["stages"], directory / "stage_shares.png"),
        "trend_by_hour": trend(b["trend_by_hour"], directory / "trend_by_hour.png", "hour"),
        "trend_by_day": trend(b["trend_by_day"], directory / "trend_by_day.png", "day"),
        "acceptance_by_client": acceptance_by_client(
            a["per_client"], directory / "acceptance_by_client.png"
        ),
        "acceptance_over_time": acceptance_over_time(
            a["per_client_by_day"], directory / "acceptance_over_time.png"
        ),
        "rejections": rejections(a["rejections_by_reason"], directory / "rejections.png"),
        "success_by_attempt": success_by_attempt(
            r["success_by_attempt_number"], directory / "success_by_attempt.png"
        ),
        "attempts_distribution": attempts_distribution(
            r["attempts_distribution"], directory / "attempts_distribution.png"
        ),
    }
