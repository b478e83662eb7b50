"""Celery on RabbitMQ: the one place that knows queues, routing and publish options.

Each stage has its own durable queue; a worker consumes only its stage's queue. Jobs are
acknowledged late (after the result is recorded), one at a time, and requeued if the
worker dies, so a killed worker loses nothing. Every publish waits for the broker's confirm
(persisted, for a durable queue), so a publish that returned survives a broker crash.
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from kombu.entity import Exchange, Queue

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
