"""Queue depth and consumers per stage, read from RabbitMQ with a passive declare."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import pika

from shared.pipeline import STAGES, queue_name


@dataclass(frozen=True)
class QueueStats:
    ready: int
    consumers: int


def pika_url(broker_url: str) -> str:
    """Kombu writes the default vhost as `//`; pika wants it percent-encoded."""
    parts = urlsplit(broker_url)
    vhost = parts.path[1:] if parts.path not in ("", "/") else "/"
    return parts._replace(path="/" + quote(vhost, safe="")).geturl()


def stage_queue_stats(broker_url: str, prefix: str, timeout: float = 3.0) -> dict[str, QueueStats]:
    params = pika.URLParameters(pika_url(broker_url))
    params.socket_timeout = timeout
    params.blocked_connection_timeout = timeout
    params.connection_attempts = 1
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        stats: dict[str, QueueStats] = {}
        for stage in STAGES:
            try:
                ok = channel.queue_declare(queue_name(stage, prefix), passive=True)
                stats[stage] = QueueStats(int(ok.method.message_count),
                                          int(ok.method.consumer_count))  # fmt: skip
            except pika.exceptions.ChannelClosedByBroker:
                # Not declared yet: no worker has started for this stage.
                stats[stage] = QueueStats(0, 0)
                channel = connection.channel()
        return stats
    finally:
        connection.close()
