"""Celery on RabbitMQ: the one place that knows queues, routing and publish options.

Each stage has its own durable queue; a worker consumes only its stage's queue. Jobs are
acknowledged late (after the result is recorded), one at a time, and requeued if the
worker dies, so a killed worker loses nothing. Every publish waits for the broker's confirm
(persisted, for a durable queue), so a publish that returned survives a broker crash.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from typing import Any

from amqp.exceptions import MessageNacked  # type: ignore[import-untyped]
from celery import Celery
from kombu.common import maybe_declare, uuid
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.exceptions import OperationalError
from kombu.messaging import Producer

from shared.pipeline import STAGES, StageName, queue_name, task_name
from shared.schema import StageJob
from shared.settings import Settings

#: Publish time in integer nanoseconds: AMQP timestamps are whole seconds, and floats do
#: not survive every AMQP client, so queue time is measured from this header.
PUBLISHED_HEADER = "faceval_published_ns"

EXCHANGE = Exchange("faceval", type="direct", durable=True)

#: Fail fast when the broker is down: the gateway answers 503 instead of hanging.
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2}
#: Seconds to wait for the broker's confirm of one publish before treating it as failed
#: (the caller retries; a duplicate job is harmless, a lost one is not).
CONFIRM_TIMEOUT_SECONDS = 5.0


def stage_queue(stage: StageName, prefix: str) -> Queue:
    name = queue_name(stage, prefix)
    return Queue(name, EXCHANGE, routing_key=name, durable=True)


def dead_letter_queue(prefix: str) -> Queue:
    name = f"{prefix}.dead_letters"
    return Queue(name, EXCHANGE, routing_key=name, durable=True)


def make_celery(settings: Settings, name: str = "faceval") -> Celery:
    app = Celery(name, broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_queues=[
            *(stage_queue(s, settings.queue_prefix) for s in STAGES),
            dead_letter_queue(settings.queue_prefix),
        ],
        task_routes={task_name(s): {"queue": queue_name(s, settings.queue_prefix)} for s in STAGES},
        faceval_queue_prefix=settings.queue_prefix,
        task_default_exchange=EXCHANGE.name,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_publish_retry_policy=PUBLISH_RETRY_POLICY,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=3.0,
        broker_heartbeat=30,
        # Publisher confirms: without them, jobs published in the second or so before a
        # broker crash were gone after its restart although they had been "sent".
        broker_transport_options={"confirm_publish": True},
        worker_send_task_events=False,
        # No remote control: nothing uses it, it costs a broadcast queue per worker, and its
        # exclusive per-node queue collides when two stacks share a broker.
        worker_enable_remote_control=False,
        task_send_sent_event=False,
        worker_hijack_root_logger=False,
        # Celery's prefetch reduction after a reconnect restores the prefetch from the thread
        # that acknowledges a task: with the threads pool that is a task thread sending
        # basic.qos on the consumer's connection while the consumer loop reads it. Seen under
        # a broker restart: a worker hung in basic_qos, another's frames interleaved
        # (UnexpectedFrame), and their queues stopped moving. Off, a reconnected worker
        # prefetches its usual two jobs at once (the documented workaround, celery#9512).
        worker_enable_prefetch_count_reduction=False,
        # Not worker_cancel_long_running_tasks_on_connection_loss: the threads pool cannot
        # cancel a running task (it logged NotImplementedError on every connection loss).
        # A job in hand when the connection drops is redelivered by the broker anyway.
        enable_utc=True,
    )
    return app


def declare_queues(app: Celery) -> None:
    """Declare every stage queue and the dead-letter queue now (idempotent): the broker's
    queue metrics, and the dashboards' dead-letter panel, exist before the first letter."""
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in app.conf.task_queues:
            queue.bind(channel).declare()


def publish_job(app: Celery, stage: StageName, job: StageJob) -> None:
    """Publish one image's job for a stage (persistent message, publish time in a header)."""
    queue = queue_name(stage, app.conf.faceval_queue_prefix)
    headers: dict[str, Any] = {PUBLISHED_HEADER: time.time_ns()}
    app.send_task(
        task_name(stage),
        args=[job.model_dump(mode="json")],
        queue=queue,
        routing_key=queue,
        exchange=EXCHANGE.name,
        headers=headers,
        retry=True,
        retry_policy=PUBLISH_RETRY_POLICY,
        delivery_mode=2,
        confirm_timeout=CONFIRM_TIMEOUT_SECONDS,
        # Celery would otherwise build a truncated repr of the arguments for its own logs
        # and events (neither used here): 0.1-0.2 ms of every publish.
        argsrepr="",
        kwargsrepr="",
    )


def publish_dead_letter(app: Celery, letter: dict[str, Any]) -> None:
    """Park a job that failed every attempt, for `faceval deadletters list|requeue`."""
    queue = dead_letter_queue(app.conf.faceval_queue_prefix)
    with app.producer_or_acquire() as producer:
        producer.publish(
            letter,
            serializer="json",
            exchange=EXCHANGE,
            routing_key=queue.routing_key,
            declare=[queue],
            delivery_mode=2,
            retry=True,
            retry_policy=PUBLISH_RETRY_POLICY,
            confirm_timeout=CONFIRM_TIMEOUT_SECONDS,
        )


class _Confirms:
    """One dedicated AMQP channel in confirm mode, and the delivery tags it still awaits."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.channel = connection.channel()
        self.channel.confirm_select()
        self.channel.events["basic_ack"].add(self._on_ack)
        self.channel.events["basic_nack"].add(self._on_nack)
        self.producer = Producer(self.channel, exchange=EXCHANGE, auto_declare=False)
        self.sent = 0
        self.pending: set[int] = set()
        self.nacked = False

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        if multiple:
            self.pending = {t for t in self.pending if t > delivery_tag}
        else:
            self.pending.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked = True
        self._on_ack(delivery_tag, multiple)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


class JobPublisher:
    """Publishes a stage's jobs (near and far) and waits once for the broker's confirms of
    all of them.

    Kombu's `confirm_publish` waits for each message's confirm before sending the next, so a
    stage's two follow-up jobs cost two confirm round trips back to back. This sends both,
    then waits until the broker has confirmed both: the same guarantee (the job that
    published them is acknowledged only after they are durable), one wait. `send` and
    `confirm` apart let the caller do its own work (the stage's MongoDB write) while the
    broker persists them. The messages are Celery's own (`as_task_v2`). A worker's task
    threads each get their own connection and channel (AMQP channels are not thread-safe).
    """

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.prefix: str = app.conf.faceval_queue_prefix
        self._local = threading.local()

    def _confirms(self) -> _Confirms:
        confirms: _Confirms | None = getattr(self._local, "confirms", None)
        if confirms is None:
            # Its own connection, without kombu's per-message confirm wait.
            connection = Connection(self.app.conf.broker_url, connect_timeout=3.0, heartbeat=0)
            connection.connect()
            confirms = _Confirms(connection)
            self._local.confirms = confirms
        return confirms

    def _drop(self) -> None:
        confirms: _Confirms | None = getattr(self._local, "confirms", None)
        self._local.confirms = None
        if confirms is not None:
            confirms.close()

    def _unconfirmed(self) -> list[tuple[StageName, Sequence[StageJob]]]:
        batch: list[tuple[StageName, Sequence[StageJob]]] | None = getattr(
            self._local, "unconfirmed", None
        )
        if batch is None:
            batch = self._local.unconfirmed = []
        return batch

    def publish(self, stage: StageName, jobs: Sequence[StageJob]) -> None:
        """Publish and wait for every confirm (`send`, then `confirm`)."""
        self.send(stage, jobs)
        self.confirm()

    def send(self, stage: StageName, jobs: Sequence[StageJob]) -> None:
        """Publish without waiting; `confirm` waits for these and any sent before."""
        self._unconfirmed().append((stage, list(jobs)))
        try:
            self._send(stage, jobs)
        except Exception:
            # A connection closed while idle, a broker restart: `confirm` sends the whole
            # batch again on a new connection.
            self._drop()

    def confirm(self) -> None:
        """Wait until the broker has confirmed every job sent since the last `confirm`. On a
        connection failure, send them all once more on a new connection and wait again (a
        duplicate job is harmless, a lost one is not); if that fails too, raise kombu's
        OperationalError, which the worker retries."""
        batch = self._unconfirmed()
        if not batch:
            return
        try:
            for attempt in (1, 2):
                try:
                    if getattr(self._local, "confirms", None) is None:
                        for stage, jobs in batch:
                            self._send(stage, jobs)
                    self._wait()
                    return
                except (MessageNacked, TimeoutError):
                    self._drop()
                    raise
                except Exception as exc:
                    self._drop()
                    if attempt == 2:
                        # Said as kombu's connection failure: raised as the socket's own
                        # error (connection refused) the job would fail, and its follow-ups
                        # be lost, whenever the job's own delivery stays sound.
                        stages = sorted({stage for stage, _ in batch})
                        raise OperationalError(f"could not publish {stages} jobs: {exc!r}") from exc
        finally:
            batch.clear()

    def discard(self) -> None:
        """Forget what was sent and not confirmed (the job failed and will be retried, which
        publishes again)."""
        self._unconfirmed().clear()

    def _send(self, stage: StageName, jobs: Sequence[StageJob]) -> None:
        confirms = self._confirms()
        queue = stage_queue(stage, self.prefix)
        # Never into a queue that does not exist yet (its messages would be dropped as
        # unroutable): declared once per connection (kombu caches it), as Celery does.
        maybe_declare(queue, confirms.channel)
        for job in jobs:
            task_id = uuid()
            headers, properties, body, _ = self.app.amqp.as_task_v2(
                task_id, task_name(stage), args=[job.model_dump(mode="json")], kwargs={},
                argsrepr="", kwargsrepr="",
            )  # fmt: skip
            headers[PUBLISHED_HEADER] = time.time_ns()
            confirms.producer.publish(
                body, routing_key=queue.routing_key, exchange=EXCHANGE.name, headers=headers,
                serializer="json", delivery_mode=2, **properties,
            )  # fmt: skip
            confirms.sent += 1
            confirms.pending.add(confirms.sent)

    def _wait(self) -> None:
        confirms = self._confirms()
        deadline = time.monotonic() + CONFIRM_TIMEOUT_SECONDS
        while confirms.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no confirm from the broker in {CONFIRM_TIMEOUT_SECONDS} s")
            confirms.connection.drain_events(timeout=remaining)
        if confirms.nacked:
            confirms.nacked = False
            raise MessageNacked("the broker refused a job")
