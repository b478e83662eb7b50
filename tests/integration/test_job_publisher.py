"""The worker's job publisher on the real broker: Celery task messages, every confirm waited
for, and a dropped connection replaced without losing a job."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pika
import pytest
from kombu.exceptions import OperationalError

from shared.messaging import PUBLISHED_HEADER, JobPublisher, make_celery
from shared.pipeline import queue_name, task_name
from shared.queues import pika_url
from shared.schema import StageJob
from shared.settings import get_settings
from shared.worker import TRANSIENT_ERRORS
from tools.stack import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def publisher() -> Iterator[tuple[JobPublisher, str, str]]:
    prefix = f"faceval-test-pub-{uuid.uuid4().hex[:8]}"
    settings = get_settings().model_copy(update={"queue_prefix": prefix})
    try:
        app = make_celery(settings, name="faceval-test-publisher")
        yield JobPublisher(app), prefix, settings.broker_url
    finally:
        connection = pika.BlockingConnection(pika.URLParameters(pika_url(settings.broker_url)))
        try:
            connection.channel().queue_delete(queue_name("accessory", prefix))
        finally:
            connection.close()


def _drain(broker_url: str, queue: str, count: int) -> list[tuple[dict[str, object], object]]:
    connection = pika.BlockingConnection(pika.URLParameters(pika_url(broker_url)))
    got: list[tuple[dict[str, object], object]] = []
    try:
        channel = connection.channel()
        deadline = time.monotonic() + 10
        while len(got) < count and time.monotonic() < deadline:
            method, props, body = channel.basic_get(queue, auto_ack=True)
            if method is None:
                time.sleep(0.05)
                continue
            got.append((dict(props.headers or {}), json.loads(body)))
    finally:
        connection.close()
    return got


def _jobs(tid: str) -> list[StageJob]:
    return [StageJob(transaction_id=tid, image=side, client_id="c") for side in ("near", "far")]


def test_publishes_both_jobs_as_celery_tasks_into_a_declared_queue(
    publisher: tuple[JobPublisher, str, str],
) -> None:
    pub, prefix, broker_url = publisher
    pub.publish("accessory", _jobs("t1"))
    messages = _drain(broker_url, queue_name("accessory", prefix), 2)
    assert len(messages) == 2
    for (headers, body), side in zip(messages, ("near", "far"), strict=True):
        assert headers["task"] == task_name("accessory")
        assert isinstance(headers[PUBLISHED_HEADER], int)
        args, kwargs, _embed = body  # type: ignore[misc]
        assert args == [StageJob(transaction_id="t1", image=side, client_id="c")
                        .model_dump(mode="json")]  # fmt: skip
        assert kwargs == {}


def test_a_dropped_connection_is_replaced_and_no_job_is_lost(
    publisher: tuple[JobPublisher, str, str],
) -> None:
    pub, prefix, broker_url = publisher
    pub.publish("accessory", _jobs("t1"))
    dropped = pub._local.confirms
    # The connection goes away under it (an idle connection dropped, a broker restart).
    dropped.connection.connection.sock.close()
    pub.publish("accessory", _jobs("t2"))
    assert pub._local.confirms is not dropped, "the publisher did not reconnect"
    ids = [body[0][0]["transaction_id"] for _, body in _drain(broker_url,  # type: ignore[index]
           queue_name("accessory", prefix), 4)]  # fmt: skip
    assert ids.count("t1") == 2 and ids.count("t2") == 2


def test_a_broker_that_stays_unreachable_is_a_retryable_failure(
    publisher: tuple[JobPublisher, str, str],
) -> None:
    pub, _, _ = publisher
    # Nothing listens there: connecting is refused, as during a broker restart. The worker
    # retries what TRANSIENT_ERRORS lists; a raw ConnectionRefusedError would fail the job.
    pub.app.conf.broker_url = f"amqp://guest:guest@127.0.0.1:{free_port()}//"
    with pytest.raises(OperationalError) as raised:
        pub.publish("accessory", _jobs("t1"))
    assert isinstance(raised.value, TRANSIENT_ERRORS)
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)
