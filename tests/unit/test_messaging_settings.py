"""Broker settings that decide whether a crash or a connection loss loses or garbles jobs."""

from __future__ import annotations

import logging

from shared.messaging import make_celery
from shared.settings import Settings
from shared.worker import LostAckIsRedelivery


def test_every_publish_waits_for_the_brokers_confirm() -> None:
    app = make_celery(Settings())
    assert app.conf.broker_transport_options["confirm_publish"] is True


def test_the_threads_pool_is_never_asked_to_cancel_tasks_on_connection_loss() -> None:
    app = make_celery(Settings())
    assert not app.conf.worker_cancel_long_running_tasks_on_connection_loss


def test_a_reconnected_worker_never_restores_its_prefetch_from_a_task_thread() -> None:
    # Celery's restore step sends basic.qos on the consumer's connection from the thread
    # that acknowledges a task: with the threads pool it raced the consumer loop and hung
    # workers after a broker restart (the fault suite's broker_kill phase ended in timeouts).
    app = make_celery(Settings())
    assert app.conf.worker_enable_prefetch_count_reduction is False


def test_a_lost_ack_after_a_connection_loss_is_logged_as_a_warning_without_traceback() -> None:
    record = logging.LogRecord(
        "celery.worker.request", logging.CRITICAL, __file__, 1,
        "Couldn't ack %r, reason:%r", (7, ConnectionError("gone")), (None, None, None),
    )  # fmt: skip
    assert LostAckIsRedelivery().filter(record)
    assert record.levelno == logging.WARNING
    assert record.exc_info is None
    assert "redelivered" in record.getMessage()
