"""The files a run leaves for analysts: the extract (CSV, Parquet), its manifest, the
data dictionary, and the transformed batch handed from `transform` to `load`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from etl.anonymise import IDENTIFIER_COLUMNS
from etl.columns import ANALYST_COLUMNS
from etl.dates import DayRange
from etl.errors import MissingInput
from etl.schema import DERIVED_FIELDS, EXTRACT_FIELDS

EXTRACT_CSV = "extract.csv"
EXTRACT_PARQUET = "extract.parquet"
MANIFEST = "extract_manifest.json"
TRANSFORMED = "transformed.parquet"
DICTIONARY_MD = "data_dictionary.md"
DICTIONARY_JSON = "data_dictionary.json"


@dataclass(frozen=True)
class Manifest:
    """What an extract holds: the next steps replace exactly these days."""

    first_day: date
    last_day: date
    rows: int
    synthetic_rows: int
    include_synthetic: bool
    extracted_at: datetime
    #: Every transaction created before this had finished when the extract ran.
    complete_until: datetime

    @property
    def days(self) -> DayRange:
        return DayRange(self.first_day, self.last_day)

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(
            {k: v.isoformat() if hasattr(v, "isoformat") else v for k, v in data.items()}, indent=2
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(
            first_day=date.fromisoformat(data["first_day"]),
            last_day=date.fromisoformat(data["last_day"]),
            rows=int(data["rows"]),
            synthetic_rows=int(data["synthetic_rows"]),
            include_synthetic=bool(data["include_synthetic"]),
            extracted_at=datetime.fromisoformat(data["extracted_at"]),
            complete_until=datetime.fromisoformat(data["complete_until"]),
        )


def write_extract(table: pa.Table, manifest: Manifest, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    csv_path, parquet_path = out / EXTRACT_CSV, out / EXTRACT_PARQUET
    # "needed" quoting keeps null (empty) apart from an empty string ("").
    pa_csv.write_csv(table, csv_path, pa_csv.WriteOptions(quoting_style="needed"))
    pq.write_table(table, parquet_path, compression="zstd")
    (out / MANIFEST).write_text(manifest.to_json())
    return [csv_path, parquet_path, out / MANIFEST, *write_dictionary(out)]


def read_manifest(out: Path) -> Manifest:
    path = out / MANIFEST
    if not path.exists():
        raise MissingInput(f"no extract in {out}: run `faceval etl extract --out {out}` first")
    return Manifest.from_json(path.read_text())


def read_parquet(path: Path, step: str) -> pa.Table:
    if not path.exists():
        raise MissingInput(f"{path} is missing: run `faceval etl {step}` first")
    return pq.read_table(path)


def write_dictionary(out: Path) -> list[Path]:
    """The data dictionary, generated from the same column definitions as the extract."""
    analysts = {c.name for c in ANALYST_COLUMNS}
    entries = [
        {
            "name": f.name,
            "type": f.type,
            "description": f.description,
            "origin": "analysts' list" if f.name in analysts else "FaceVal addition",
            "table": "extract, staging, warehouse",
            "pseudonymised": f.name in IDENTIFIER_COLUMNS,
        }
        for f in EXTRACT_FIELDS
    ] + [
        {
            "name": f.name,
            "type": f.type,
            "description": f.description,
            "origin": "derived by transform",
            "table": "warehouse (fact_transaction)",
            "pseudonymised": False,
        }
        for f in DERIVED_FIELDS
    ]
    lines = [
        "# FaceVal ETL data dictionary",
        "",
        "Generated from `etl.columns.COLUMNS` and `etl.schema`. Times are milliseconds;",
        "a stage or model that did not run is null, never 0. `user_name` and `documento` are",
        "keyed hashes (re-keyed for export); no raw identifier is exported.",
        "",
        "| # | column | type | origin | description |",
        "|---|---|---|---|---|",
    ]
    for i, e in enumerate(entries, 1):
        flag = " (pseudonymised)" if e["pseudonymised"] else ""
        lines.append(
            f"| {i} | `{e['name']}` | {e['type']} | {e['origin']} | {e['description']}{flag} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / DICTIONARY_MD).write_text("\n".join(lines) + "\n")
    (out / DICTIONARY_JSON).write_text(json.dumps(entries, indent=2))
    return [out / DICTIONARY_MD, out / DICTIONARY_JSON]
