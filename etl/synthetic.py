"""Synthetic transactions for scale tests only, clearly marked as such.

Every synthetic row carries `api_hash = "synthetic"` (no gateway produces it) and every
synthetic document also `synthetic: true`; extraction skips them unless asked, and each
report states how many of its rows were synthetic. Rows are generated column-wise with
numpy (a million in seconds), in the extract's schema; documents are built from those rows
in the operational shape, so they go through the real extraction.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pyarrow as pa

from etl.schema import EXTRACT_SCHEMA, STAGE_TIMINGS
from shared.codes import BY_REASON
from shared.pipeline import COLUMN_SERVICE, STAGES

SYNTHETIC_API_HASH = "synthetic"

#: Reasons a synthetic attempt fails for, with the stage that decides and a weight.
FAILURES: tuple[tuple[str, str, float], ...] = (
    ("no_face", "face_detector", 0.18),
    ("multiple_faces", "face_detector", 0.05),
    ("face_too_small", "face_detector", 0.07),
    ("accessory_detected", "accessory", 0.20),
    ("low_quality", "quality", 0.28),
    ("face_mismatch", "identity", 0.04),
    ("spoof_detected", "pad", 0.10),
    ("timeout", "pad", 0.03),
    ("internal_error", "quality", 0.05),
)
#: Median execution and queue milliseconds per stage (log-normal around them).
STAGE_MS: dict[str, tuple[float, float]] = {
    "face_detector": (14.0, 4.0),
    "accessory": (6.0, 3.0),
    "quality": (38.0, 6.0),
    "identity": (105.0, 5.0),
    "pad": (22.0, 5.0),
}
ATTEMPTS_P = (0.55, 0.27, 0.12, 0.06)
CLIENTS = 5


def _hex(rng: np.random.Generator, n: int, chars: int) -> np.ndarray:
    raw = rng.integers(0, 2**63, size=(n, (chars + 15) // 16), dtype=np.int64)
    return np.array(["".join(f"{v:016x}" for v in row)[:chars] for row in raw], dtype=object)


def synthetic_table(
    n: int, seed: int = 7, first_day: date | None = None, days: int = 7
) -> pa.Table:
    """`n` synthetic transactions over `days` days, in the extract's schema."""
    rng = np.random.default_rng(seed)
    first_day = first_day or (datetime.now(UTC).date() - timedelta(days=days))
    # Processes: a user makes 1-4 attempts; earlier attempts failed, the last may succeed.
    per_process = rng.choice(len(ATTEMPTS_P), size=n, p=ATTEMPTS_P) + 1
    ends = np.cumsum(per_process)
    processes = int(np.searchsorted(ends, n)) + 1
    per_process = per_process[:processes]
    per_process[-1] -= int(ends[processes - 1] - n)
    process = np.repeat(np.arange(processes), per_process)
    starts = np.repeat(np.cumsum(per_process) - per_process, per_process)
    attempt = np.arange(n) - starts
    is_last = attempt == per_process[process] - 1
    accepted = is_last & (rng.random(n) < 0.85)

    failure = rng.choice(len(FAILURES), size=n, p=[f[2] for f in FAILURES])
    reasons = np.where(accepted, "accepted", np.array([f[0] for f in FAILURES])[failure])
    # A timed-out transaction was ended by the sweeper, not by a stage.
    decided = np.array([f[1] for f in FAILURES], dtype=object)[failure]
    decided[accepted | (reasons == "timeout")] = None
    reached = np.where(
        accepted, len(STAGES) - 1, np.array([STAGES.index(f[1]) for f in FAILURES])[failure]
    )

    span = days * 86_400.0
    process_start = rng.random(processes) * (span - 3_600)
    gaps = np.where(attempt == 0, 0.0, rng.exponential(120.0, size=n))
    offsets = process_start[process] + _grouped_cumsum(gaps, per_process)
    epoch = datetime.combine(first_day, datetime.min.time(), tzinfo=UTC).timestamp()
    created_us = ((epoch + offsets) * 1e6).astype(np.int64)

    columns: dict[str, Any] = {
        name: pa.nulls(n, EXTRACT_SCHEMA.field(name).type) for name in EXTRACT_SCHEMA.names
    }
    summaries = [BY_REASON[r] for r in reasons]
    columns.update(
        api_hash=pa.array([SYNTHETIC_API_HASH] * n),
        user_name=pa.array(_hex(rng, processes, 64)[process]),
        file_token=pa.array(_hex(rng, n, 32)),
        service=pa.array(["validations"] * n),
        summary_code=pa.array([s.code for s in summaries], pa.int32()),
        summary_status=pa.array([str(s.status) for s in summaries]),
        summary_desc=pa.array([s.description for s in summaries]),
        summary_reason=pa.array(reasons.tolist()),
        http_code=pa.array([s.http_code for s in summaries], pa.int32()),
        date=pa.array(created_us, pa.timestamp("us", tz="UTC")),
        procesoConvenioGuid=pa.array([str(uuid.UUID(h)) for h in _hex(rng, processes, 32)]).take(
            pa.array(process)
        ),
        convenio=pa.array(
            np.array([f"synthetic-client-{i}" for i in range(CLIENTS)], dtype=object)[
                rng.integers(0, CLIENTS, processes)
            ][process]
        ),
        documento=pa.array(_hex(rng, processes, 64)[process]),
        decided_by=pa.array(decided.tolist(), pa.string()),
    )
    for side in ("near", "far"):
        width = rng.choice([720, 1080, 1440], size=n).astype(np.int32)
        columns[f"img_size_{side}_img_width"] = pa.array(width)
        columns[f"img_size_{side}_img_height"] = pa.array((width * 4 // 3).astype(np.int32))
    # End to end: near and far of a stage run side by side, so the slower one counts.
    total = np.full(n, 3.0) + rng.exponential(2.0, size=n)
    near_wall: dict[str, np.ndarray] = {}
    for stage, side, exec_col, queue_col in STAGE_TIMINGS:
        ran = reached >= STAGES.index(stage)
        run_median, wait_median = STAGE_MS[stage]
        run = rng.lognormal(np.log(run_median), 0.35, size=n)
        wait = rng.lognormal(np.log(wait_median), 0.9, size=n)
        columns[exec_col] = pa.array(np.round(run, 3), mask=~ran)
        columns[queue_col] = pa.array(np.round(wait, 3), mask=~ran)
        if side == "near":
            near_wall[stage] = run + wait
        else:
            total += np.where(ran, np.maximum(run + wait, near_wall[stage]), 0.0)
    columns["total_time_ms"] = pa.array(np.round(total, 3))
    _scores(columns, rng, reached, n)
    return pa.table({name: columns[name] for name in EXTRACT_SCHEMA.names}).cast(EXTRACT_SCHEMA)


def _grouped_cumsum(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    total = np.cumsum(values)
    group_start = np.repeat(np.cumsum(sizes) - sizes, sizes)
    before = np.concatenate([[0.0], total])[group_start]
    result: np.ndarray = total - before
    return result


def _scores(columns: dict[str, Any], rng: np.random.Generator, reached: np.ndarray, n: int) -> None:
    quality_ran = reached >= STAGES.index("quality")
    pad_ran = reached >= STAGES.index("pad")
    for side in ("near", "far"):
        tag = f"{side}_img"
        for metric, scale in (
            ("sharpness", 120.0),
            ("colorfulness", 40.0),
            ("contrast", 50.0),
            ("brightness", 120.0),
            ("blur_score", 0.3),
            ("svd_score", 0.5),
        ):
            values = np.round(rng.gamma(4.0, scale / 4.0, size=n), 4)
            columns[f"score_{metric}_classic_metrics_{tag}"] = pa.array(values, mask=~quality_ran)
        columns[f"time_ms_classic_metrics_{tag}"] = pa.array(
            np.round(rng.lognormal(np.log(9.0), 0.3, size=n), 3), mask=~quality_ran
        )
        columns[f"prob_as_heuristics_{tag}"] = pa.array(
            np.round(rng.beta(2.0, 8.0, size=n), 4), mask=~pad_ran
        )
        columns[f"time_ms_as_heuristics_{tag}"] = pa.array(
            np.round(rng.lognormal(np.log(15.0), 0.3, size=n), 3), mask=~pad_ran
        )
        columns[f"queue_time_ms_as_heuristics_{tag}"] = columns[f"queue_time_ms_pad_{tag}"]


# --- documents, in the shape the pipeline writes ---------------------------------------------


def _stage_record(row: dict[str, Any], stage: str, side: str) -> dict[str, Any] | None:
    service = COLUMN_SERVICE[stage]  # type: ignore[index]
    run = row[f"time_ms_{service}_{side}_img"]
    if run is None:
        return None
    scores: dict[str, Any] = {}
    if stage == "quality":
        scores["classic_metrics"] = {
            "model": "classic-metrics",
            "version": "synthetic",
            "status": "ok",
            "time_ms": row[f"time_ms_classic_metrics_{side}_img"],
            "values": {
                m: row[f"score_{m}_classic_metrics_{side}_img"]
                for m in (
                    "sharpness",
                    "colorfulness",
                    "contrast",
                    "brightness",
                    "blur_score",
                    "svd_score",
                )
            },
        }
    if stage == "pad":
        scores["as_heuristics"] = {
            "model": "as-heuristics",
            "version": "synthetic",
            "status": "ok",
            "time_ms": row[f"time_ms_as_heuristics_{side}_img"],
            "values": {"prob": row[f"prob_as_heuristics_{side}_img"]},
        }
    return {
        "verdict": "pass",
        "reasons": [],
        "scores": scores,
        "time_ms": run,
        "queue_time_ms": row[f"queue_time_ms_{service}_{side}_img"],
        "worker": "synthetic",
    }


def document_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """The operational document that `etl.columns.analyst_row` reads `row` back from."""
    stages: dict[str, Any] = {}
    for stage in STAGES:
        records = {side: _stage_record(row, stage, side) for side in ("near", "far")}
        if any(records.values()):
            stages[stage] = {side: r for side, r in records.items() if r is not None}
    created: datetime = row["date"]
    return {
        "_id": row["file_token"],
        "file_token": row["file_token"],
        "synthetic": True,
        "status": "completed",
        "client_id": row["convenio"],
        "convenio": row["convenio"],
        "client_name": row["convenio"],
        "user_name": row["user_name"],
        "documento": row["documento"],
        "procesoConvenioGuid": row["procesoConvenioGuid"],
        "service": row["service"],
        "api_hash": row["api_hash"],
        "images": {
            side: {
                "width": row[f"img_size_{side}_img_width"],
                "height": row[f"img_size_{side}_img_height"],
                "format": "JPEG",
            }
            for side in ("near", "far")
        },
        "stages": stages,
        "created_at": created,
        "created_ns": int(created.timestamp() * 1e9),
        "finished_at": created + timedelta(milliseconds=row["total_time_ms"]),
        "summary_code": row["summary_code"],
        "summary_status": row["summary_status"],
        "summary_reason": row["summary_reason"],
        "summary_desc": row["summary_desc"],
        "http_code": row["http_code"],
        "total_time_ms": row["total_time_ms"],
        "decided_by": row["decided_by"],
        "reasons": [],
    }


def synthetic_documents(
    n: int, seed: int = 7, first_day: date | None = None, days: int = 7
) -> list[dict[str, Any]]:
    table = synthetic_table(n, seed, first_day, days)
    return [document_from_row(row) for row in table.to_pylist()]
