"""End to end through the real gateway, RabbitMQ, Redis, workers and MongoDB-wire server."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from etl.columns import analyst_row
from shared.blobstore import image_key
from shared.messaging import make_celery, publish_job
from shared.pipeline import STAGES
from shared.schema import StageJob
from shared.storage import Doc
from tests.integration.conftest import (
    ApiClient,
    client_id,
    in_frozen_hands,
    submit,
    wait_final,
    wait_for,
    with_store,
)
from tools.stack import Stack, queue_consumers

pytestmark = pytest.mark.integration

ReadDoc = Callable[[str], Doc | None]


def test_accepts_a_good_pair_and_records_every_stage_for_both_images(
    client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes], read_doc: ReadDoc, stack: Stack
) -> None:
    response = submit(
        client_a, *astronaut_jpegs, process_guid="7d9f3c1e-8e8a-4c55-9d1c-1b2f3a4b5c6d"
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["summary_status"] == "accepted"
    assert result["summary_code"] == 0
    assert result["http_code"] == 200
    assert result["decided_by"] is None
    assert result["total_time_ms"] > 0
    for stage in STAGES:
        for side in ("near", "far"):
            image = result["stages"][stage][side]
            assert image["verdict"] == "pass"
            assert image["time_ms"] > 0
            assert image["queue_time_ms"] >= 0
            assert image["scores"], f"{stage}/{side} has no scores"

    doc = read_doc(result["transaction_id"])
    assert doc is not None
    row = analyst_row(doc)
    for side in ("near", "far"):
        tag = f"{side}_img"
        for service in ("face_detector", "accessory_detector", "quality", "pad"):
            assert row[f"time_ms_{service}_{tag}"] > 0
            assert row[f"queue_time_ms_{service}_{tag}"] >= 0
        assert row[f"score_sharpness_classic_metrics_{tag}"] > 0
        assert 0 <= row[f"prob_as_heuristics_{tag}"] <= 1
        # Models that are not installed are recorded as not run: null, never a number.
        assert row[f"score_liqe_{tag}"] is None
        assert row[f"prob_ibeta2_full_{tag}"] is None
        assert doc["stages"]["quality"][side]["scores"]["liqe"]["status"] == "not_run"
    assert row["procesoConvenioGuid"] == "7d9f3c1e-8e8a-4c55-9d1c-1b2f3a4b5c6d"
    assert row["img_size_far_img_width"] == 512
    # The end user's identifier is stored only as a keyed hash.
    assert "12345678" not in str(doc)
    # Every score names the model and version that produced it.
    classic = doc["stages"]["quality"]["near"]["scores"]["classic_metrics"]
    assert classic["model"] and classic["version"]
    # Images do not outlive their transaction.
    cache = redis.Redis.from_url(stack.settings.redis_url)
    assert not cache.exists(image_key(result["transaction_id"], "near"))
    assert not cache.exists(image_key(result["transaction_id"], "far"))


def test_rejects_when_no_face_found_and_later_stages_never_run(
    client_a: ApiClient, no_face_jpegs: tuple[bytes, bytes], read_doc: ReadDoc
) -> None:
    result = submit(client_a, *no_face_jpegs).json()
    assert result["summary_reason"] == "no_face"
    assert result["summary_code"] == 10
    assert result["decided_by"] == "face_detector"
    assert {r["code"] for r in result["reasons"]} == {"no_face"}
    assert result["stages"]["accessory"] is None
    assert result["stages"]["pad"] is None
    doc = read_doc(result["transaction_id"])
    assert doc is not None
    assert set(doc["stages"]) == {"face_detector"}
    row = analyst_row(doc)
    assert row["time_ms_face_detector_near_img"] > 0
    for column in (
        "time_ms_accessory_detector_near_img",
        "queue_time_ms_liqe_far_img",
        "score_sharpness_classic_metrics_near_img",
        "prob_as_heuristics_far_img",
    ):
        assert row[column] is None, column  # early termination is null, not zero


def test_rejects_at_the_quality_stage_when_blurred(
    client_a: ApiClient, blurred_jpegs: tuple[bytes, bytes]
) -> None:
    result = submit(client_a, *blurred_jpegs).json()
    assert result["summary_reason"] == "low_quality"
    assert result["summary_code"] == 30
    assert result["decided_by"] == "quality"
    assert all(r["stage"] == "quality" for r in result["reasons"])
    assert result["stages"]["accessory"]["near"]["verdict"] == "pass"
    assert result["stages"]["pad"] is None


def test_returns_202_and_a_status_url_without_wait(
    client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes]
) -> None:
    response = submit(client_a, *astronaut_jpegs, wait=0)
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "pending"
    assert response.headers["location"] == body["status_url"]
    final = wait_final(client_a, body["transaction_id"])
    assert final["status"] == "completed"
    assert final["summary_reason"] == "accepted"


def test_another_client_cannot_read_the_transaction(
    client_a: ApiClient, client_b: ApiClient, no_face_jpegs: tuple[bytes, bytes]
) -> None:
    tid = submit(client_a, *no_face_jpegs).json()["transaction_id"]
    assert client_a.http.get(f"/v1/validations/{tid}").status_code == 200
    response = client_b.http.get(f"/v1/validations/{tid}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def _truncated_jpeg(jpeg: bytes) -> bytes:
    return jpeg[: len(jpeg) // 2]


@pytest.mark.parametrize(
    ("name", "make", "status", "code"),
    [
        ("empty file", lambda ok: b"", 400, "empty_file"),
        ("text renamed .jpg", lambda ok: b"this is not an image\n" * 50, 415, "unsupported_format"),
        ("truncated JPEG", _truncated_jpeg, 422, "image_undecodable"),
        ("oversized", lambda ok: ok + b"\0" * (11 * 1024 * 1024), 413, "file_too_large"),
    ],
)
def test_refuses_bad_uploads_with_a_stable_code(
    client_a: ApiClient,
    astronaut_jpegs: tuple[bytes, bytes],
    name: str,
    make: Callable[[bytes], bytes],
    status: int,
    code: str,
) -> None:
    good = astronaut_jpegs[0]
    response = submit(client_a, make(good), good, wait=0)
    assert response.status_code == status, (name, response.text)
    body = response.json()
    assert body["code"] == code
    assert body["message"]


def test_refuses_requests_without_a_valid_key(
    stack: Stack, astronaut_jpegs: tuple[bytes, bytes]
) -> None:
    files = {"near": ("n.jpg", astronaut_jpegs[0]), "far": ("f.jpg", astronaut_jpegs[1])}
    for headers in ({}, {"X-API-Key": "fv_not-a-real-key"}):
        response = httpx.post(f"{stack.url}/v1/validations", files=files,
                              data={"user_id": "1"}, headers=headers)  # fmt: skip
        assert response.status_code == 401
        assert response.json()["code"] == "unauthorized"


def test_refuses_a_missing_form_field(
    client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes]
) -> None:
    files = {"near": ("n.jpg", astronaut_jpegs[0])}
    response = client_a.http.post("/v1/validations", files=files, data={"user_id": "1"})
    assert response.status_code == 422
    assert response.json()["code"] == "missing_field"
    assert "far" in response.json()["message"]


@pytest.mark.parametrize("stage", STAGES)
def test_a_worker_killed_with_a_job_in_hand_loses_nothing(
    stage: str,
    stack: Stack,
    client_a: ApiClient,
    astronaut_jpegs: tuple[bytes, bytes],
    read_doc: ReadDoc,
) -> None:
    settings = stack.settings
    worker = stack.processes[stage]
    # Frozen, the worker still holds its prefetched (unacknowledged) job when it is killed.
    worker.send_signal(signal.SIGSTOP)
    try:
        tid = submit(client_a, *astronaut_jpegs, wait=0).json()["transaction_id"]

        wait_for(in_frozen_hands(stack, stage, tid), 60, f"{stage} jobs to reach the frozen worker")
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.send_signal(signal.SIGCONT)
    stack.processes.pop(stage)
    stack.start_worker(stage)  # type: ignore[arg-type]
    wait_for(lambda: queue_consumers(settings.broker_url, settings.queue_prefix)[stage] > 0,
              60, f"the restarted {stage} worker")  # fmt: skip
    final = wait_final(client_a, tid)
    assert final["summary_reason"] == "accepted", final
    doc = read_doc(tid)
    assert doc is not None
    for side in ("near", "far"):
        assert doc["stages"][stage][side]["verdict"] == "pass"
    assert doc["stages"][stage]["decision"]["outcome"] == "pass"


def test_ends_with_image_expired_when_the_image_is_gone(
    stack: Stack, client_a: ApiClient, read_doc: ReadDoc
) -> None:
    from shared.transactions import new_transaction

    tid = f"expired-{time.time_ns()}"
    doc = new_transaction(
        transaction_id=tid, client_id=client_id(stack, client_a), client_name=client_a.name,
        user_name="u", documento="d", process_guid=None, client_reference=None,
        service="test", api_hash="test", images={}, expires_at=None, deadline_seconds=60,
    )  # fmt: skip

    with_store(stack, lambda store: store.create_transaction(doc))
    celery = make_celery(stack.settings)
    for side in ("near", "far"):
        publish_job(celery, "face_detector", StageJob(transaction_id=tid, image=side))
    final = wait_final(client_a, tid, seconds=30)
    assert final["summary_reason"] == "image_expired"
    assert final["summary_code"] == 91
    assert final["summary_status"] == "error"


def test_sweeps_a_transaction_that_stopped_progressing_to_timeout(
    stack: Stack, client_a: ApiClient
) -> None:
    from shared.transactions import new_transaction

    tid = f"stuck-{time.time_ns()}"
    doc: dict[str, Any] = new_transaction(
        transaction_id=tid, client_id=client_id(stack, client_a), client_name=client_a.name,
        user_name="u", documento="d", process_guid=None, client_reference=None,
        service="test", api_hash="test", images={}, expires_at=None, deadline_seconds=60,
    )  # fmt: skip
    doc["deadline_at"] = doc["created_at"].replace(year=doc["created_at"].year - 1)

    with_store(stack, lambda store: store.create_transaction(doc))
    final = wait_final(client_a, tid, seconds=30)
    assert final["status"] == "completed"
    assert final["summary_reason"] == "timeout"
    assert final["summary_code"] == 90


def test_prometheus_text_shows_stage_histograms(
    stack: Stack, client_a: ApiClient, no_face_jpegs: tuple[bytes, bytes]
) -> None:
    submit(client_a, *no_face_jpegs)
    port = stack.metrics_ports["face_detector"]
    text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
    bucket = 'faceval_stage_queue_seconds_bucket{image="near",le="0.001",outcome="reject",'
    assert bucket + 'stage="face_detector"}' in text
    assert "faceval_stage_execution_seconds_count" in text
    gateway = httpx.get(f"{stack.url}/metrics").text
    assert "faceval_http_request_duration_seconds_bucket" in gateway


def test_health_and_readiness(stack: Stack) -> None:
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.url}/readyz").json()
    assert ready == {"ready": True, "checks": {"mongodb": "ok", "redis": "ok", "rabbitmq": "ok"}}


def test_cli_submit_prints_the_result_json(
    stack: Stack, client_a: ApiClient, tmp_path: Any
) -> None:
    import json
    import subprocess
    import sys

    from tools.samples import write_samples

    written = {s.name: (n, f) for s, n, f in write_samples(tmp_path)}
    near, far = written["no_face"]
    done = subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "submit", str(near),
         str(far), "--key", client_a.key, "--url", stack.url, "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["summary_reason"] == "no_face"
    short = subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", "submit", str(near),
         str(far), "--key", client_a.key, "--url", stack.url],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert short.returncode == 0, short.stderr
    first = short.stdout.splitlines()[0]
    assert ": no_face (decided by face_detector) code 10" in first
