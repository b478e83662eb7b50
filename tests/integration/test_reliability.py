"""Faults survived, bad input refused, tenants isolated, nothing lost: on the real servers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import psutil
import pytest
import redis

from shared.blobstore import image_key
from shared.messaging import make_celery, publish_job
from shared.queues import stage_queue_stats
from shared.schema import StageJob
from shared.storage import Doc, Store
from shared.transactions import new_transaction
from tests.integration.conftest import (
    ApiClient,
    cli,
    client_id,
    in_frozen_hands,
    submit,
    wait_final,
    wait_for,
    with_store,
)
from tools.stack import Stack, free_port, queue_consumers, wait_for_port

pytestmark = pytest.mark.integration

ReadDoc = Callable[[str], Doc | None]


@contextmanager
def frozen(stack: Stack, name: str) -> Iterator[None]:
    """Freeze a process (SIGSTOP) so that jobs wait for it; thaw it on the way out."""
    proc = stack.processes[name]
    proc.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)


# --- poison jobs and dead letters ----------------------------------------------------------


def test_a_poison_job_is_dead_lettered_and_can_be_listed_and_requeued(
    stack: Stack, client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes], read_doc: ReadDoc
) -> None:
    # A job whose face context has no landmarks makes the accessory model raise every time.
    tid = f"poison-{uuid.uuid4().hex[:8]}"
    doc = new_transaction(
        transaction_id=tid, client_id=client_id(stack, client_a), client_name=client_a.name,
        user_name="u", documento="d", process_guid=None, client_reference=None,
        service="test", api_hash="test", images={}, expires_at=None, deadline_seconds=120,
    )  # fmt: skip
    doc["queued_at"] = doc["created_at"]  # its jobs are published below, not by a gateway
    # The detector passed it (a stage records only after the one before it).
    doc["stages"]["face_detector"] = {"decision": {"outcome": "pass", "delivery": "detector"}}
    with_store(stack, lambda store: store.create_transaction(doc))
    cache = redis.Redis.from_url(stack.settings.redis_url)
    for side, data in zip(("near", "far"), astronaut_jpegs, strict=True):
        cache.set(image_key(tid, side), data, ex=600)
    bad_face = {"x": 10, "y": 10, "width": 100, "height": 100, "score": 0.99, "landmarks": []}
    celery = make_celery(stack.settings)
    for side in ("near", "far"):
        publish_job(celery, "accessory", StageJob(transaction_id=tid, image=side, face=bad_face))

    final = wait_final(client_a, tid, seconds=60)
    assert final["summary_reason"] == "internal_error"
    assert final["summary_code"] == 99
    assert final["decided_by"] == "accessory"
    stored = read_doc(tid)
    assert stored is not None
    assert stored["stages"]["accessory"]["near"]["attempts"] == stack.settings.max_job_attempts
    assert (
        stored["stages"]["accessory"]["near"]["scores"]["accessory_classifier"]["status"] == "error"
    )

    listed = cli("deadletters", "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.count(tid) == 2  # near and far

    first_finish = stored["finished_at"]
    requeued = cli("deadletters", "requeue", tid)
    assert requeued.returncode == 0, requeued.stdout + requeued.stderr
    assert requeued.stdout.count("requeued") == 2

    # Reopened and analysed again from scratch: it fails the same way, a later time.
    def ended_again() -> bool:
        current = read_doc(tid)
        return (current is not None and current["status"] == "completed"
                and current["finished_at"] > first_finish)  # fmt: skip

    wait_for(ended_again, 60, "the requeued transaction to end")
    again = read_doc(tid)
    assert again is not None
    assert again["summary_reason"] == "internal_error"
    assert again["stages"]["accessory"]["far"]["attempts"] == stack.settings.max_job_attempts
    # Clean up: the letters from the second failure are for this test only.
    cache.delete(image_key(tid, "near"), image_key(tid, "far"))
    assert cli("deadletters", "requeue", tid).returncode == 1  # images gone: kept, said why


# --- rate limits and load shedding -----------------------------------------------------------


def test_a_client_over_its_rate_limit_gets_429_with_retry_after(stack: Stack) -> None:
    name = f"tiny-{uuid.uuid4().hex[:6]}"
    done = cli("client", "create", name, "--rate-limit", "2")
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    files = {"near": ("n.jpg", b""), "far": ("f.jpg", b"")}
    codes = []
    for _ in range(3):
        response = httpx.post(f"{stack.url}/v1/validations", files=files,
                              data={"user_id": "1"}, headers={"X-API-Key": key})  # fmt: skip
        codes.append(response.json()["code"])
    assert codes[:2] == ["empty_file", "empty_file"]
    assert codes[2] == "rate_limited"
    assert response.status_code == 429
    assert 1 <= int(response.headers["retry-after"]) <= 61


def test_sheds_new_work_with_503_when_queues_are_too_deep(
    stack: Stack, client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes]
) -> None:
    port = free_port()
    env = {**os.environ, "FACEVAL_PORT": str(port), "FACEVAL_MAX_QUEUE_DEPTH": "1",
           "FACEVAL_QUEUE_DEPTH_POLL_SECONDS": "0.2"}  # fmt: skip
    log = open(stack.log_dir / "gateway-shedding.log", "wb")  # noqa: SIM115
    gateway = subprocess.Popen([sys.executable, "-m", "gateway"], env=env, stdout=log,
                               stderr=subprocess.STDOUT)  # fmt: skip
    try:
        assert wait_for_port("127.0.0.1", port, 60)
        with frozen(stack, "face_detector"):
            # The frozen worker holds two jobs (one per task thread); the rest wait.
            tids = [submit(client_a, *astronaut_jpegs, wait=0).json()["transaction_id"]
                    for _ in range(3)]  # fmt: skip
            wait_for(lambda: stage_queue_stats(stack.settings.broker_url,
                      stack.settings.queue_prefix)["face_detector"].ready >= 3, 30,
                      "jobs to queue up")  # fmt: skip
            time.sleep(1.0)
            files = {"near": ("n.jpg", astronaut_jpegs[0]), "far": ("f.jpg", astronaut_jpegs[1])}
            response = httpx.post(
                f"http://127.0.0.1:{port}/v1/validations",
                files=files,
                data={"user_id": "1"},
                headers={"X-API-Key": client_a.key},
            )
            assert response.status_code == 503
            assert response.json()["code"] == "overloaded"
            assert int(response.headers["retry-after"]) > 0
        for tid in tids:  # nothing queued was lost
            assert wait_final(client_a, tid)["summary_reason"] == "accepted"
    finally:
        gateway.terminate()
        gateway.wait(15)
        log.close()


# --- tenant isolation --------------------------------------------------------------------------


def test_a_client_can_never_read_list_or_guess_another_clients_transactions(
    client_a: ApiClient, client_b: ApiClient, no_face_jpegs: tuple[bytes, bytes]
) -> None:
    tid = submit(client_a, *no_face_jpegs).json()["transaction_id"]
    mine = client_a.http.get("/v1/validations", params={"limit": 100}).json()["items"]
    assert tid in {item["transaction_id"] for item in mine}
    theirs = client_b.http.get("/v1/validations", params={"limit": 100}).json()["items"]
    assert tid not in {item["transaction_id"] for item in theirs}
    for guess in (tid, tid.upper(), tid[:-1] + "0", "../" + tid, uuid.uuid4().hex):
        response = client_b.http.get(f"/v1/validations/{guess}")
        assert response.status_code == 404, guess
        assert response.json()["code"] == "not_found"


# --- faults ------------------------------------------------------------------------------------


def test_a_worker_stopped_with_sigterm_hands_back_its_job(
    stack: Stack, client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes]
) -> None:
    settings = stack.settings
    proc = stack.processes["quality"]
    with frozen(stack, "quality"):
        tid = submit(client_a, *astronaut_jpegs, wait=0).json()["transaction_id"]
        wait_for(in_frozen_hands(stack, "quality", tid), 60,
                 "the jobs in the frozen quality worker's hands")  # fmt: skip
        proc.send_signal(signal.SIGTERM)
    proc.wait(30)  # a warm shutdown: it exits by itself
    stack.processes.pop("quality")
    stack.start_worker("quality")
    wait_for(lambda: queue_consumers(settings.broker_url, settings.queue_prefix)["quality"] > 0,
              60, "the restarted quality worker")  # fmt: skip
    final = wait_final(client_a, tid)
    assert final["summary_reason"] == "accepted"
    assert final["stages"]["quality"]["near"]["verdict"] == "pass"


def test_workers_wait_out_a_mongodb_outage_without_losing_the_job(
    stack: Stack, client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes], read_doc: ReadDoc
) -> None:
    with frozen(stack, "face_detector"):
        tid = submit(client_a, *astronaut_jpegs, wait=0).json()["transaction_id"]
        wait_for(in_frozen_hands(stack, "face_detector", tid), 60,
                 "the jobs in the frozen worker's hands")  # fmt: skip
        stack.stop_process("mongo")
    # The worker now finds MongoDB gone: it retries with backoff and acknowledges nothing.
    time.sleep(4)
    ready = httpx.get(f"{stack.url}/readyz").json()
    assert ready["checks"]["mongodb"].startswith("unavailable")
    stack.ensure_infrastructure()  # the same storage: a restart, not a new database
    final = wait_final(client_a, tid, seconds=120)
    assert final["summary_reason"] == "accepted"
    doc = read_doc(tid)
    assert doc is not None
    assert doc["stages"]["face_detector"]["near"]["queue_time_ms"] >= 0


def test_queued_jobs_survive_a_rabbitmq_crash_and_the_gateway_answers_503_meanwhile(
    isolated: Stack, isolated_client: ApiClient, astronaut_jpegs: tuple[bytes, bytes]
) -> None:
    # The stack's own RabbitMQ node, SIGKILLed: never the machine's shared broker.
    settings, node = isolated.settings, isolated.rabbit
    assert node is not None
    with frozen(isolated, "face_detector"):
        tid = submit(isolated_client, *astronaut_jpegs, wait=0).json()["transaction_id"]
        wait_for(in_frozen_hands(isolated, "face_detector", tid), 60, "jobs queued")
        node.kill()
        try:
            started = time.monotonic()
            response = submit(isolated_client, *astronaut_jpegs, wait=0)
            assert response.status_code == 503
            assert response.json()["code"] == "service_unavailable"
            assert response.headers["retry-after"]
            assert time.monotonic() - started < 20  # answers, does not hang
        finally:
            node.start()
    final = wait_final(isolated_client, tid, seconds=180)
    assert final["summary_reason"] == "accepted"
    wait_for(lambda: all(queue_consumers(settings.broker_url, settings.queue_prefix).values()),
              60, "every worker to reconnect")  # fmt: skip


# --- bad input over HTTP -------------------------------------------------------------------------


def test_refuses_duplicate_and_badly_encoded_form_fields(
    client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes]
) -> None:
    near, far = astronaut_jpegs
    duplicate = client_a.http.post(
        "/v1/validations",
        files=[("near", ("a.jpg", near)), ("near", ("b.jpg", near)), ("far", ("c.jpg", far))],
        data={"user_id": "1"},
    )
    assert duplicate.status_code == 422
    assert duplicate.json()["code"] == "invalid_field"
    bad_guid = submit(client_a, near, far, wait=0, process_guid="not-a-guid")
    assert bad_guid.status_code == 422
    assert bad_guid.json()["code"] == "invalid_field"
    empty_user = submit(client_a, near, far, wait=0, user_id="")
    assert empty_user.status_code == 422
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="user_id"\r\n\r\n\xff\xfe\xfa\r\n'
        b"--XyZ--\r\n"
    )
    multipart = {"Content-Type": "multipart/form-data; boundary=XyZ"}
    raw = client_a.http.post("/v1/validations", content=body, headers=multipart)
    assert raw.status_code in (400, 422)
    assert raw.json()["code"] in ("missing_field", "invalid_field")


def test_hostile_uploads_never_crash_the_gateway_or_grow_its_memory(
    stack: Stack, client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes]
) -> None:
    gateway = psutil.Process(stack.processes["gateway"].pid)
    good = astronaut_jpegs[0]
    hostile = [b"", b"\x00" * 1000, good[:100], b"\xff\xd8\xff" + b"\x00" * 5000,
               b"GIF89a" + b"\x00" * 100, b"<html>" + good, good[: len(good) // 3]]  # fmt: skip

    def round_of_abuse() -> None:
        for data in hostile:
            response = submit(client_a, data, good, wait=0)
            assert 400 <= response.status_code < 500, response.text

    round_of_abuse()
    before = gateway.memory_info().rss
    for _ in range(15):
        round_of_abuse()
    growth = gateway.memory_info().rss - before
    assert growth < 30 * 1024 * 1024, f"gateway grew {growth / 1e6:.1f} MB"
    assert httpx.get(f"{stack.url}/healthz").status_code == 200


# --- personal data -------------------------------------------------------------------------------


def test_rejected_transactions_leave_no_images_and_logs_hold_no_secrets(
    stack: Stack, client_a: ApiClient, no_face_jpegs: tuple[bytes, bytes], read_doc: ReadDoc
) -> None:
    raw_user = f"DOC-{uuid.uuid4().hex[:10]}"
    result = submit(client_a, *no_face_jpegs, user_id=raw_user).json()
    tid = result["transaction_id"]
    cache = redis.Redis.from_url(stack.settings.redis_url)
    assert not cache.exists(image_key(tid, "near"), image_key(tid, "far"))
    doc = read_doc(tid)
    assert doc is not None
    assert raw_user not in str(doc)
    # Kept for the retention period only.
    assert doc["expires_at"] is not None
    days = (doc["expires_at"] - doc["created_at"]).days
    assert days == stack.settings.retention_days
    logs = "".join(p.read_text(errors="replace") for p in stack.log_dir.glob("*.log"))
    assert raw_user not in logs
    assert client_a.key not in logs
    assert stack.settings.pseudonym_secret.get_secret_value() not in logs


def test_transaction_documents_expire_through_a_ttl_index(stack: Stack) -> None:
    async def indexes(store: Store) -> dict[str, Any]:
        return dict(await store.transactions.index_information())

    info = with_store(stack, indexes)
    assert info["retention_ttl"]["expireAfterSeconds"] == 0
    assert info["retention_ttl"]["key"] == [("expires_at", 1)]


# --- API keys ------------------------------------------------------------------------------------


def test_a_rotated_or_revoked_key_stops_working_at_once(stack: Stack) -> None:
    name = f"rotating-{uuid.uuid4().hex[:6]}"
    created = cli("client", "create", name)
    assert created.returncode == 0, created.stderr
    old_key = created.stdout.strip().splitlines()[-1]

    def status(key: str) -> int:
        return httpx.get(f"{stack.url}/v1/validations", headers={"X-API-Key": key}).status_code

    assert status(old_key) == 200
    rotated = cli("client", "rotate", name)
    assert rotated.returncode == 0, rotated.stderr
    new_key = rotated.stdout.strip().splitlines()[-1]
    assert new_key != old_key
    assert status(old_key) == 401
    assert status(new_key) == 200
    assert cli("client", "revoke", name).returncode == 0
    assert status(new_key) == 401
    assert cli("client", "revoke", name).returncode == 1  # already revoked: says so


def test_extreme_aspect_ratios_are_refused_or_judged_never_crash(
    client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes]
) -> None:
    import numpy as np

    from shared.imaging import encode_jpeg

    strip = encode_jpeg(np.full((100, 6000, 3), 128, dtype=np.uint8))
    refused = submit(client_a, strip, astronaut_jpegs[1], wait=0)
    assert refused.status_code == 422
    assert refused.json()["code"] == "image_too_small"
    tall = encode_jpeg(np.full((8000, 130, 3), 90, dtype=np.uint8))
    judged = submit(client_a, tall, tall).json()
    assert judged["status"] == "completed"
    assert judged["summary_reason"] == "no_face"


def test_a_polyglot_is_treated_as_the_image_it_starts_with(
    client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes], stack: Stack
) -> None:
    # A JPEG with a ZIP archive appended (as phones append extra pictures after the first
    # image's end marker): accepted as a JPEG, analysed as one, never served back.
    import io
    import zipfile

    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("payload.html", "<script>alert(1)</script>")
    near = astronaut_jpegs[0] + archive.getvalue()
    result = submit(client_a, near, astronaut_jpegs[1]).json()
    assert result["summary_reason"] == "accepted"
    assert result["stages"]["face_detector"]["near"]["verdict"] == "pass"
    cache = redis.Redis.from_url(stack.settings.redis_url)
    assert not cache.exists(image_key(result["transaction_id"], "near"))
