"""What one hop's delivery costs: publish to the task function, Celery against plain pika.

    python -m bench.delivery [--rounds 5] [--count 150]

Every stage hop of FaceVal is a RabbitMQ delivery to a Celery worker. This measures that
delivery alone, with no stage work, light load (one message in flight at a time, a new one
every 10 ms), the variants interleaved round by round so background load hits them alike:

- `pika`: a plain pika consumer process (prefetch 1, ack after recording), the message
  published on a confirm channel; the floor for a Python consumer on this broker.
- `celery_threads`: the production Celery app (`shared.messaging.make_celery`) and worker
  options (`--pool threads --concurrency 2`, as `shared.worker.run_worker` starts a stage),
  the message published by the workers' own `JobPublisher`.
- `celery_solo`: the same app with `--pool solo` (no thread hand-off).

The delay runs from the publish time stamped in the message header (just before the
publish, as the workers stamp it) to the task function starting; for Celery it is split at
the `task_received` signal (the consumer thread has decoded the message and built the
request) into wire-to-request and request-to-task (the pool's hand-off and the tracer).
The pika message is padded to the size of the Celery one (a real stage job, body plus
headers). Writes bench/results/delivery.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pika
import redis
from celery.signals import task_received

from bench.stats import (
    format_table,
    latency_summary,
    machine,
    percentile,
    ratio,
    spread,
    write_json,
)
from shared.messaging import PUBLISHED_HEADER, JobPublisher, declare_queues, make_celery
from shared.pipeline import StageName, queue_name, task_name
from shared.queues import pika_url
from shared.schema import StageJob
from shared.settings import Settings, get_settings

VARIANTS = ("pika", "celery_threads", "celery_solo")
#: The stage whose queue and task name the Celery variants use (any stage would do).
STAGE: StageName = "face_detector"
#: Seconds between publishes: each message is alone in the queue, as in a closed loop.
INTERVAL_S = 0.010
#: A worker that has not consumed within this many seconds failed the run.
READY_TIMEOUT_S = 60.0


def _job() -> StageJob:
    return StageJob(transaction_id=uuid.uuid4().hex, image="near", client_id="bench",
                    created_ns=time.time_ns(), policy={"bench": True})  # fmt: skip


def _settings(prefix: str) -> Settings:
    return get_settings().model_copy(update={"queue_prefix": prefix})


def _key(prefix: str, variant: str, part: str) -> str:
    return f"{prefix}:delivery:{variant}:{part}"


# --- the consumers (separate processes) ----------------------------------------------------


def run_celery_worker(prefix: str, variant: str) -> None:
    settings = _settings(_celery_prefix(prefix, variant))
    app = make_celery(settings, name=f"faceval-bench-{variant}")
    store = redis.Redis.from_url(settings.redis_url)
    received: dict[str, int] = {}

    @task_received.connect(weak=False)  # type: ignore[untyped-decorator]
    def _received(request: Any = None, **_: Any) -> None:
        received[request.id] = time.time_ns()

    @app.task(name=task_name(STAGE), bind=True)  # type: ignore[untyped-decorator]
    def analyze(self: Any, payload: dict[str, Any]) -> None:
        now = time.time_ns()
        headers = getattr(self.request, "headers", None) or {}
        published = getattr(self.request, PUBLISHED_HEADER, None) or headers[PUBLISHED_HEADER]
        at = received.pop(self.request.id, now)
        with store.pipeline(transaction=False) as pipe:
            pipe.rpush(_key(prefix, variant, "total"), now - int(published))
            pipe.rpush(_key(prefix, variant, "to_request"), at - int(published))
            pipe.execute()

    pool, concurrency = ("threads", "2") if variant == "celery_threads" else ("solo", "1")
    app.worker_main(["worker", "--queues", queue_name(STAGE, settings.queue_prefix), "--pool", pool,
                     "--concurrency", concurrency, "--hostname", f"{variant}-{os.getpid()}@%h",
                     "--loglevel", "WARNING", "--without-gossip", "--without-mingle",
                     "--without-heartbeat"])  # fmt: skip


def run_pika_consumer(prefix: str) -> None:
    settings = _settings(prefix)
    store = redis.Redis.from_url(settings.redis_url)
    connection = pika.BlockingConnection(pika.URLParameters(pika_url(settings.broker_url)))
    channel = connection.channel()
    channel.queue_declare(_pika_queue(prefix), durable=True)
    channel.basic_qos(prefetch_count=1)

    def on_message(ch: Any, method: Any, properties: Any, _body: bytes) -> None:
        now = time.time_ns()
        store.rpush(_key(prefix, "pika", "total"), now - int(properties.headers["published_ns"]))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(_pika_queue(prefix), on_message)
    channel.start_consuming()


def _pika_queue(prefix: str) -> str:
    return f"{prefix}.delivery.pika"


def _celery_prefix(prefix: str, variant: str) -> str:
    """Each Celery variant has queues of its own."""
    return f"{prefix}-{variant}"


# --- the publisher (this process) ----------------------------------------------------------


class Publishers:
    """One publisher per variant, each publishing the way its consumer's producers do."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        settings = _settings(prefix)
        self.apps = {
            v: make_celery(_settings(_celery_prefix(prefix, v)), name=f"faceval-bench-{v}")
            for v in VARIANTS[1:]
        }
        self.jobs = {}
        for variant, app in self.apps.items():
            declare_queues(app)
            self.jobs[variant] = JobPublisher(app)
        self.connection = pika.BlockingConnection(pika.URLParameters(pika_url(settings.broker_url)))
        self.channel = self.connection.channel()
        self.channel.queue_declare(_pika_queue(prefix), durable=True)
        self.channel.confirm_delivery()
        job = _job()
        self.job = job
        # The pika message is padded to the Celery message's size, body plus headers (JSON
        # for both, as bench.messaging weighs a job message).
        headers, _, body, _ = self.apps["celery_threads"].amqp.as_task_v2(
            uuid.uuid4().hex, task_name(STAGE), args=[job.model_dump(mode="json")], kwargs={}
        )
        headers[PUBLISHED_HEADER] = time.time_ns()
        size = len(json.dumps(body).encode()) + len(json.dumps(headers, default=str).encode())
        self.pika_body = b"x" * size

    def publisher(self, variant: str) -> Callable[[], None]:
        if variant == "pika":
            return self._pika
        jobs = self.jobs[variant]
        return lambda: jobs.publish(STAGE, [self.job])

    def _pika(self) -> None:
        properties = pika.BasicProperties(delivery_mode=2,
                                          headers={"published_ns": time.time_ns()})  # fmt: skip
        self.channel.basic_publish("", _pika_queue(self.prefix), self.pika_body, properties)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.channel.queue_delete(_pika_queue(self.prefix))
        for app in self.apps.values():
            with contextlib.suppress(Exception), app.connection_for_write() as conn:
                channel = conn.channel()
                for queue in app.amqp.queues.values():
                    queue.bind(channel).delete()
        with contextlib.suppress(Exception):
            self.connection.close()


def _start(prefix: str, variant: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "bench.delivery", "consume", variant,
                             "--prefix", prefix])  # fmt: skip


def _wait_consumer(
    store: redis.Redis, publish: Callable[[], None], prefix: str, variant: str
) -> None:
    """Publish until five messages came through: the consumer is up and warm."""
    key = _key(prefix, variant, "total")
    deadline = time.monotonic() + READY_TIMEOUT_S
    while store.llen(key) < 5:
        if time.monotonic() > deadline:
            raise RuntimeError(f"the {variant} consumer consumed nothing in {READY_TIMEOUT_S} s")
        publish()
        time.sleep(0.2)
    store.delete(key, _key(prefix, variant, "to_request"))


def _collect(store: redis.Redis, prefix: str, variant: str, count: int) -> dict[str, list[float]]:
    parts = ("total", "to_request") if variant != "pika" else ("total",)
    deadline = time.monotonic() + READY_TIMEOUT_S
    while store.llen(_key(prefix, variant, "total")) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{variant}: messages were not all consumed")
        time.sleep(0.05)
    out = {}
    for part in parts:
        key = _key(prefix, variant, part)
        out[part] = [int(v) / 1e6 for v in store.lrange(key, 0, -1)]
        store.delete(key)
    return out


def summarise(rounds: Mapping[str, Sequence[Mapping[str, Sequence[float]]]]) -> dict[str, Any]:
    """Per variant: each round's latency summary of every part, the p50s' spread over
    rounds; Celery's ratios over pika and the split of its p50."""
    variants: dict[str, Any] = {}
    for variant, runs in rounds.items():
        summaries = [{part: latency_summary(values) for part, values in run.items()}
                     for run in runs]  # fmt: skip
        parts = summaries[0].keys() if summaries else ()
        variants[variant] = {
            "p50_ms": {part: spread(s[part]["p50"] for s in summaries) for part in parts},
            "p90_ms": spread(percentile(run["total"], 90) for run in runs),
            "rounds": summaries,
        }
    pika_p50 = variants["pika"]["p50_ms"]["total"]["median"] if "pika" in variants else None
    ratios = {}
    for variant in VARIANTS[1:]:
        if variant in variants:
            p50 = variants[variant]["p50_ms"]
            ratios[f"{variant}_over_pika_p50"] = ratio(p50["total"]["median"], pika_p50)
            total, to_request = p50["total"]["median"], p50["to_request"]["median"]
            variants[variant]["request_to_task_p50_ms"] = (
                round(total - to_request, 4) if total is not None and to_request is not None
                else None
            )  # fmt: skip
    return {"variants": variants, "ratios": ratios}


def run(rounds: int, count: int) -> dict[str, Any]:
    prefix = f"faceval-bench-delivery-{uuid.uuid4().hex[:6]}"
    settings = _settings(prefix)
    store = redis.Redis.from_url(settings.redis_url)
    publishers = Publishers(prefix)
    processes = {v: _start(prefix, v) for v in VARIANTS}
    collected: dict[str, list[dict[str, list[float]]]] = {v: [] for v in VARIANTS}
    try:
        for variant in VARIANTS:
            _wait_consumer(store, publishers.publisher(variant), prefix, variant)
        for index in range(rounds):
            for variant in VARIANTS:
                publish = publishers.publisher(variant)
                for _ in range(count):
                    publish()
                    time.sleep(INTERVAL_S)
                collected[variant].append(_collect(store, prefix, variant, count))
                p50 = latency_summary(collected[variant][-1]["total"])["p50"]
                print(f"  round {index + 1}/{rounds} {variant:<15} p50 {p50:.3f} ms", flush=True)
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
        publishers.close()
        for variant in VARIANTS:
            store.delete(_key(prefix, variant, "total"), _key(prefix, variant, "to_request"))
    report = summarise(collected)
    report.update({
        "benchmark": "delivery",
        "machine": machine(),
        "config": {"rounds": rounds, "count": count, "interval_s": INTERVAL_S,
                   "message_bytes": len(publishers.pika_body)},
    })  # fmt: skip
    return report


def print_report(report: Mapping[str, Any]) -> None:
    rows = []
    for variant in VARIANTS:
        entry = report["variants"].get(variant)
        if entry is None:
            continue
        p50 = entry["p50_ms"]
        to_request = p50.get("to_request", {}).get("median")
        over_rounds = f"{p50['total']['min']}-{p50['total']['max']}"
        rows.append([variant, p50["total"]["median"], over_rounds, entry["p90_ms"]["median"],
                     to_request if to_request is not None else "",
                     entry.get("request_to_task_p50_ms", "")])  # fmt: skip
    print(format_table(["variant", "p50 ms", "p50 over rounds", "p90 ms", "to request",
                        "request to task"], rows))  # fmt: skip
    for name, value in report["ratios"].items():
        print(f"{name}: {value}")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    consume = sub.add_parser("consume", help="one variant's consumer (started by the benchmark)")
    consume.add_argument("variant", choices=VARIANTS)
    consume.add_argument("--prefix", required=True)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count", type=int, default=150)
    args = parser.parse_args(argv)
    if args.command == "consume":
        if args.variant == "pika":
            run_pika_consumer(args.prefix)
        else:
            run_celery_worker(args.prefix, args.variant)
        return
    report = run(args.rounds, args.count)
    print_report(report)
    print(f"wrote {write_json('delivery.json', report)}")


if __name__ == "__main__":
    main()
