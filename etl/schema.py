"""Column types of every table the ETL writes, derived from `etl.columns` (one source).

The extract is exactly `etl.columns.COLUMNS` (the analysts' list first); staging adds
the day it belongs to; the warehouse's fact table adds the derived analytical columns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from etl.columns import COLUMNS, SCORER_ENTRIES
from shared.analysis import IMAGE_SIDES
from shared.pipeline import COLUMN_SERVICE, STAGES, StageName

#: Arrow type of each `Column.type` of etl.columns, plus the types derived columns use.
ARROW_TYPES: dict[str, Any] = {
    "string": pa.string(),
    "int": pa.int32(),
    "px": pa.int32(),
    "ms": pa.float64(),
    "double": pa.float64(),
    "datetime": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "bool": pa.bool_(),
}

#: The same types in SQL; DuckDB and PostgreSQL both accept these spellings.
SQL_TYPES: dict[str, str] = {
    "string": "TEXT",
    "int": "INTEGER",
    "px": "INTEGER",
    "ms": "DOUBLE PRECISION",
    "double": "DOUBLE PRECISION",
    "datetime": "TIMESTAMPTZ",
    "date": "DATE",
    "bool": "BOOLEAN",
}


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    description: str


EXTRACT_FIELDS: list[Field] = [Field(c.name, c.type, c.description) for c in COLUMNS]
EXTRACT_NAMES: list[str] = [f.name for f in EXTRACT_FIELDS]

STAGING_EXTRA: list[Field] = [
    Field("etl_day", "date", "UTC day of `date`: the unit a re-run replaces"),
    Field("staged_at", "datetime", "when this row was staged"),
]

DERIVED_FIELDS: list[Field] = [
    Field("day", "date", "UTC day of the transaction"),
    Field("hour", "datetime", "UTC hour of the transaction (start of the hour)"),
    Field("is_synthetic", "bool", "a generated scale-test row, never real traffic"),
    Field("is_accepted", "bool", "summary_status is accepted"),
    Field("last_stage_run", "string", "the last stage that recorded a time (null if none ran)"),
    Field(
        "decided_stage",
        "string",
        "stage that decided: the rejecting or failing stage, else the last stage run",
    ),
    Field("stages_run", "int", "how many of the four stages ran"),
    Field("process_key", "string", "user within a process: user_name + procesoConvenioGuid"),
    Field("attempt_number", "int", "1-based attempt of this user within the process, by date"),
    Field("attempts_in_process", "int", "attempts of this user within the process so far"),
    Field("ms_since_previous_attempt", "ms", "time since the same user's previous attempt"),
    Field("previous_summary_reason", "string", "summary reason of the previous attempt"),
    Field("retried_after", "bool", "the user made another attempt in the process later"),
    Field("exec_ms_total", "ms", "execution time of every stage and image, added up"),
    Field("queue_ms_total", "ms", "queue time of every stage and image, added up"),
    Field("queue_share", "double", "queue_ms_total / (queue_ms_total + exec_ms_total)"),
    Field("exec_share", "double", "exec_ms_total / (queue_ms_total + exec_ms_total)"),
]

FACT_FIELDS: list[Field] = [*EXTRACT_FIELDS, *DERIVED_FIELDS]
FACT_NAMES: list[str] = [f.name for f in FACT_FIELDS]


def arrow_schema(fields: list[Field]) -> pa.Schema:
    return pa.schema([pa.field(f.name, ARROW_TYPES[f.type]) for f in fields])


EXTRACT_SCHEMA = arrow_schema(EXTRACT_FIELDS)
STAGING_SCHEMA = arrow_schema([*EXTRACT_FIELDS, *STAGING_EXTRA])
FACT_SCHEMA = arrow_schema(FACT_FIELDS)


def quote(name: str) -> str:
    """A SQL identifier, quoted: column names keep their case (procesoConvenioGuid)."""
    return '"' + name.replace('"', '""') + '"'


def column_ddl(fields: list[Field]) -> str:
    return ",\n  ".join(f"{quote(f.name)} {SQL_TYPES[f.type]}" for f in fields)


def column_list(names: list[str], prefix: str = "") -> str:
    return ", ".join(prefix + quote(n) for n in names)


# --- the timing columns, by stage and image ------------------------------------------------


def exec_column(stage: StageName, side: str) -> str:
    return f"time_ms_{COLUMN_SERVICE[stage]}_{side}_img"


def queue_column(stage: StageName, side: str) -> str:
    return f"queue_time_ms_{COLUMN_SERVICE[stage]}_{side}_img"


STAGE_TIMINGS: list[tuple[StageName, str, str, str]] = [
    (stage, side, exec_column(stage, side), queue_column(stage, side))
    for stage in STAGES
    for side in IMAGE_SIDES
]
#: Models timed inside a stage (their execution only; they share the stage's queue): the
#: analysts' list, then every other scorer model of the manifest (etl.columns gives each
#: its `time_ms_<model>_<img>` columns).
_ANALYST_TIMED = ("liqe", "topiq", "classic_metrics", "as_35_selfies", "ibeta2_crops",
                  "ibeta2_full", "ibeta2_clip", "as_heuristics")  # fmt: skip
MODEL_TIMINGS: list[tuple[str, str, str]] = [
    (model, side, f"time_ms_{model}_{side}_img")
    for model in (
        *_ANALYST_TIMED,
        *(e.name for e in SCORER_ENTRIES if e.name not in _ANALYST_TIMED),
    )
    for side in IMAGE_SIDES
]
TIME_COLUMNS: list[str] = [f.name for f in EXTRACT_FIELDS if f.type == "ms"]

assert all(t[2] in EXTRACT_NAMES and t[3] in EXTRACT_NAMES for t in STAGE_TIMINGS)
assert all(t[2] in EXTRACT_NAMES for t in MODEL_TIMINGS)
