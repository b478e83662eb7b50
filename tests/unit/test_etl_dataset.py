"""A small hand-checked dataset of transaction documents, shaped as the pipeline writes
them, and checks of the dataset itself. The other test_etl_* files import it; every
number their tests expect is worked out by hand in the docstrings here.

Ten transactions, two clients, seven users each in their own process, two days:

| token | client | user/process | time (UTC)        | outcome            | stages run      |
|-------|--------|--------------|-------------------|--------------------|-----------------|
| t01   | a      | u1/P1        | 2026-03-02 10:00  | low_quality        | fd, acc, quality|
| t02   | a      | u1/P1        | 2026-03-02 10:02  | accepted           | all             |
| t03   | a      | u2/P2        | 2026-03-02 11:00  | accepted           | all             |
| t04   | a      | u3/P3        | 2026-03-02 12:00  | no_face            | fd              |
| t05   | a      | u3/P3        | 2026-03-02 12:01  | accessory_detected | fd, acc         |
| t06   | a      | u3/P3        | 2026-03-02 12:05  | accepted           | all             |
| t07   | b      | u4/P4        | 2026-03-02 09:00  | spoof_detected     | all             |
| t08   | b      | u5/P5        | 2026-03-03 13:00  | accepted           | all             |
| t09   | b      | u6/P6        | 2026-03-03 14:00  | timeout            | fd              |
| t10   | b      | u7/P7        | 2026-03-03 14:30  | no_face            | fd              |

Times (ms): face_detector near executes 10, 20, ... 100 (t01..t10), queue 5; far 10/1.
accessory 3/1 both images; quality near 200/50, far 190/50; pad 30/10. Every
total_time_ms is 1000.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from etl.columns import analyst_row
from shared.codes import BY_REASON
from shared.pipeline import STAGES

DAY1, DAY2 = "2026-03-02", "2026-03-03"
#: (token, client, user, time, reason, last stage that ran)
ROWS: list[tuple[str, str, str, str, str, str]] = [
    ("t01", "client-a", "u1", f"{DAY1}T10:00:00", "low_quality", "quality"),
    ("t02", "client-a", "u1", f"{DAY1}T10:02:00", "accepted", "pad"),
    ("t03", "client-a", "u2", f"{DAY1}T11:00:00", "accepted", "pad"),
    ("t04", "client-a", "u3", f"{DAY1}T12:00:00", "no_face", "face_detector"),
    ("t05", "client-a", "u3", f"{DAY1}T12:01:00", "accessory_detected", "accessory"),
    ("t06", "client-a", "u3", f"{DAY1}T12:05:00", "accepted", "pad"),
    ("t07", "client-b", "u4", f"{DAY1}T09:00:00", "spoof_detected", "pad"),
    ("t08", "client-b", "u5", f"{DAY2}T13:00:00", "accepted", "pad"),
    ("t09", "client-b", "u6", f"{DAY2}T14:00:00", "timeout", "face_detector"),
    ("t10", "client-b", "u7", f"{DAY2}T14:30:00", "no_face", "face_detector"),
]
#: (near exec, near queue, far exec, far queue) per stage; face_detector near varies.
STAGE_TIMES = {
    "accessory": (3.0, 1.0, 3.0, 1.0),
    "quality": (200.0, 50.0, 190.0, 50.0),
    "identity": (100.0, 5.0, 100.0, 5.0),
    "pad": (30.0, 10.0, 30.0, 10.0),
}
#: What the operational documents hold for the user (already a keyed hash in production;
#: here a raw-looking id, so a test can prove the export never carries it through).
RAW_USER_PREFIX = "RAWUSER-"
RAW_DOCUMENT_PREFIX = "RAWDOC-"
SECRET_REFERENCE = "CLIENT-REF-SECRET"


def _record(run: float, wait: float) -> dict[str, Any]:
    return {
        "verdict": "pass",
        "reasons": [],
        "scores": {},
        "time_ms": run,
        "queue_time_ms": wait,
        "worker": "worker-host-7",
    }


def document(index: int, row: tuple[str, str, str, str, str, str]) -> dict[str, Any]:
    token, client, user, at, reason, last = row
    summary = BY_REASON[reason]
    created = datetime.fromisoformat(at).replace(tzinfo=UTC)
    stages: dict[str, Any] = {}
    for stage in STAGES[: STAGES.index(last) + 1]:
        if stage == "face_detector":
            near, far = _record(10.0 * (index + 1), 5.0), _record(10.0, 1.0)
            near["face"] = {"x": 1, "y": 2, "width": 3, "height": 4, "landmarks": []}
        else:
            t = STAGE_TIMES[stage]
            near, far = _record(t[0], t[1]), _record(t[2], t[3])
        stages[stage] = {"near": near, "far": far}
    decided = None if reason in ("accepted", "timeout") else last
    return {
        "_id": token,
        "file_token": token,
        "status": "completed",
        "client_id": client,
        "convenio": client,
        "client_name": f"{client} Secret Bank Name",
        "user_name": f"{RAW_USER_PREFIX}{user}",
        "documento": f"{RAW_DOCUMENT_PREFIX}{user}",
        "procesoConvenioGuid": f"00000000-0000-4000-8000-00000000000{user[-1]}",
        "client_reference": SECRET_REFERENCE,
        "service": "validations",
        "api_hash": "abc123",
        "images": {"near": {"width": 640, "height": 480}, "far": {"width": 800, "height": 600}},
        "stages": stages,
        "created_at": created,
        "finished_at": created,
        "summary_code": summary.code,
        "summary_status": str(summary.status),
        "summary_reason": summary.reason,
        "summary_desc": summary.description,
        "http_code": summary.http_code,
        "total_time_ms": 1000.0,
        "decided_by": decided,
        "reasons": [{"code": reason, "detail": "free text about the user"}],
    }


def documents() -> list[dict[str, Any]]:
    return [document(i, row) for i, row in enumerate(ROWS)]


def test_dataset_leaves_stages_that_did_not_run_null_in_the_analysts_columns() -> None:
    rows = {r["file_token"]: r for r in map(analyst_row, documents())}
    assert rows["t04"]["time_ms_face_detector_near_img"] == 40.0
    assert rows["t04"]["time_ms_accessory_detector_near_img"] is None
    assert rows["t01"]["time_ms_quality_far_img"] == 190.0
    assert rows["t01"]["queue_time_ms_pad_near_img"] is None
    assert rows["t09"]["summary_code"] == 90
