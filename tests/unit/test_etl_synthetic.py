"""Synthetic scale-test data is marked, realistic in shape, and never passes as real."""

from __future__ import annotations

from datetime import date

import pyarrow.compute as pc

from etl.anonymise import IDENTIFIER_COLUMNS
from etl.extract import extract_documents
from etl.reports.build import compute
from etl.synthetic import SYNTHETIC_API_HASH, synthetic_documents, synthetic_table
from etl.transform import transform
from shared.codes import SUMMARIES


def test_synthetic_rows_are_marked_and_use_only_catalogue_codes() -> None:
    table = synthetic_table(2_000, seed=3, first_day=date(2026, 1, 1), days=2)
    assert table.num_rows == 2_000
    assert set(table["api_hash"].to_pylist()) == {SYNTHETIC_API_HASH}
    assert set(table["summary_code"].to_pylist()) <= {s.code for s in SUMMARIES}
    # Early termination: a detector rejection leaves the later stages null.
    no_face = table.filter(pc.equal(table["summary_reason"], "no_face"))
    assert no_face.num_rows > 0
    assert no_face["time_ms_pad_near_img"].null_count == no_face.num_rows
    assert no_face["time_ms_face_detector_near_img"].null_count == 0


def test_synthetic_documents_read_back_through_extraction_as_their_rows() -> None:
    rows = synthetic_table(50, seed=5, first_day=date(2026, 1, 1)).to_pylist()
    docs = synthetic_documents(50, seed=5, first_day=date(2026, 1, 1))
    assert all(d["synthetic"] is True for d in docs)
    extracted = extract_documents(docs, "s").to_pylist()
    for row, back in zip(rows, extracted, strict=True):
        for name, value in row.items():
            if name not in IDENTIFIER_COLUMNS:
                assert back[name] == value, name


def test_reports_state_how_many_rows_were_synthetic() -> None:
    report = compute(transform(synthetic_table(500, seed=1)), 24.0, "test")
    assert report["data"]["synthetic_rows"] == 500
    assert report["data"]["rows"] == 500
