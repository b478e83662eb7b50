"""Worker probes: readiness follows the broker URL, liveness catches a hung worker."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from celery import Celery

from shared import probes
from shared.probes import Heartbeat, hung_reason, install_heartbeat

# 127.0.0.1 -> 127.0.0.1:5672 established; 127.0.0.1:6379 listening (not a connection).
TCP = """  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid
   0: 0100007F:D431 0100007F:1628 01 00000000:00000000 00:00000000 00000000 10001
   1: 0100007F:18EB 00000000:0000 0A 00000000:00000000 00:00000000 00000000 10001
"""


def test_reads_established_connections_from_proc(tmp_path: Path) -> None:
    (tmp_path / "tcp").write_text(TCP)
    (tmp_path / "tcp6").write_text(
        "header\n   0: 0000000000000000FFFF00000100007F:D432 "
        "0000000000000000FFFF0000070A000A:162B 01 0\n"
    )
    assert probes.established_remotes(tmp_path) == {("127.0.0.1", 5672), ("10.0.10.7", 5675)}


def test_the_broker_port_comes_from_the_url_not_a_constant() -> None:
    assert probes.broker_endpoints("amqp://u:p@127.0.0.1:5672//") == {("127.0.0.1", 5672)}
    assert probes.broker_endpoints("amqps://u:p@127.0.0.1//") == {("127.0.0.1", 5671)}
    assert probes.broker_endpoints("amqp://127.0.0.1:15000//;amqp://127.0.0.2//") == {
        ("127.0.0.1", 15000),
        ("127.0.0.2", 5672),
    }
    assert probes.broker_endpoints("amqp://no-such-host.invalid//") == set()


def test_a_fresh_heartbeat_is_alive_and_a_stale_one_while_connected_is_hung() -> None:
    now = 1000.0
    assert hung_reason({"beat": now - 5, "job_started": None}, True, now) is None
    assert "last beat" in (hung_reason({"beat": now - 600, "job_started": None}, True, now) or "")
    assert "no heartbeat" in (hung_reason(None, True, now) or "")


def test_a_broker_outage_does_not_make_a_worker_dead() -> None:
    assert hung_reason({"beat": 0.0, "job_started": None}, False, 1000.0) is None
    assert hung_reason(None, False, 1000.0) is None


def test_a_job_stuck_for_minutes_is_hung_even_with_a_fresh_beat() -> None:
    now = 10_000.0
    beat = {"beat": now - 1, "job_started": now - probes.MAX_JOB_SECONDS - 1}
    assert "job has run" in (hung_reason(beat, True, now) or "")
    assert "job has run" in (hung_reason(beat, False, now) or "")


def test_the_heartbeat_records_the_oldest_running_job(tmp_path: Path) -> None:
    heartbeat = Heartbeat(tmp_path / "hb.json")
    heartbeat.beat()
    assert probes.read_heartbeat(heartbeat.path)["job_started"] is None  # type: ignore[index]
    with heartbeat.job():
        heartbeat.beat()
        started = probes.read_heartbeat(heartbeat.path)["job_started"]  # type: ignore[index]
        assert started == pytest.approx(time.time(), abs=5)
    heartbeat.beat()
    assert probes.read_heartbeat(heartbeat.path)["job_started"] is None  # type: ignore[index]


def test_a_running_celery_consumer_beats(tmp_path: Path) -> None:
    app = Celery("probe-test", broker="memory://", backend="cache+memory://")
    heartbeat = Heartbeat(tmp_path / "hb.json")
    install_heartbeat(app, heartbeat)
    worker = app.Worker(pool="solo", concurrency=1, without_heartbeat=True,
                        without_mingle=True, without_gossip=True, loglevel="WARNING")  # fmt: skip
    thread = threading.Thread(target=worker.start, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while probes.read_heartbeat(heartbeat.path) is None and time.monotonic() < deadline:
            time.sleep(0.1)
        beat = probes.read_heartbeat(heartbeat.path)
        assert beat is not None and time.time() - beat["beat"] < 10
    finally:
        worker.stop()
        thread.join(10)
