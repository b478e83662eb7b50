"""A stage's Celery worker process: its task, its /metrics endpoint, and how it starts."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

from amqp.exceptions import MessageNacked  # type: ignore[import-untyped]
from celery import Celery, Task
from celery.signals import worker_ready, worker_shutdown
from kombu.exceptions import OperationalError
from prometheus_client import start_http_server
from pymongo.errors import PyMongoError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.messaging import (
    PUBLISHED_HEADER,
    JobPublisher,
    declare_queues,
    make_celery,
    publish_dead_letter,
)
from shared.models_registry import ModelNotReady, Registry, limit_values
from shared.pipeline import METRICS_PORT, queue_name, task_name
from shared.probes import HEARTBEAT_NAME, Heartbeat, install_heartbeat
from shared.runtime import ModelFailure, StageDefinition, StageOutOfOrder, StageRuntime
from shared.schema import StageJob
from shared.settings import Settings, get_settings

log = logging.getLogger(__name__)

#: Infrastructure failures are retried with backoff; the job is not acknowledged as done
#: until its result is recorded. Analyzer failures are not retried: they are recorded.
TRANSIENT_ERRORS: tuple[type[Exception], ...] = (
    PyMongoError,
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    OperationalError,
    MessageNacked,
)
MAX_TRANSIENT_RETRIES = 8


class LostAckIsRedelivery(logging.Filter):
    """A job that finishes after the broker connection dropped cannot be acknowledged on the
    dead channel; the broker redelivers it and its conditional writes make that harmless.
    Celery logs this as CRITICAL with a traceback; it is an expected warning here."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.CRITICAL and str(record.msg).startswith("Couldn't ack"):
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = "Couldn't ack %r after a broker connection loss (%r): it is redelivered"
            record.exc_info = record.exc_text = None
        return True


def published_ns_of(request: Any) -> int | None:
    value = getattr(request, PUBLISHED_HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(PUBLISHED_HEADER)
    return int(value) if value is not None else None


def create_worker_app(
    definition: StageDefinition, settings: Settings, runtime: StageRuntime | None = None
) -> Celery:
    stage = definition.name
    app = make_celery(settings, name=f"faceval-{stage}")
    # The liveness probe (shared/probes.py) reads this: the consumer loop's beat and how long
    # the oldest running job has run. One file per stage, so workers sharing a state
    # directory (the development stack) do not overwrite each other's.
    heartbeat = Heartbeat(Path(settings.state_dir) / f"{stage}-{HEARTBEAT_NAME}")
    install_heartbeat(app, heartbeat)
    publisher = JobPublisher(app)

    def get_runtime() -> StageRuntime:
        nonlocal runtime
        if runtime is None:
            runtime = StageRuntime(definition, settings)
        return runtime

    @app.task(name=task_name(stage), bind=True, max_retries=MAX_TRANSIENT_RETRIES)  # type: ignore[untyped-decorator]
    def analyze(self: Task, payload: dict[str, Any]) -> None:
        job = StageJob.model_validate(payload)
        rt = get_runtime()
        try:
            try:
                with heartbeat.job():
                    outcome = rt.handle(job, published_ns_of(self.request), str(self.request.id),
                                        send=publisher.send)  # fmt: skip
            except BaseException:
                publisher.discard()  # the retry publishes them again
                raise
            # The next stage's jobs went out before the stage's MongoDB write: the job is
            # acknowledged (on return) only once the broker has them on disk.
            publisher.confirm()
            if outcome.dead_letter is not None:
                publish_dead_letter(app, outcome.dead_letter)
                log.error("%s: job %s/%s dead-lettered", stage, job.transaction_id, job.image)
        except StageOutOfOrder as exc:
            # The stage before is writing its record (or retrying it): soon, and briefly.
            delay = min(2.0, 0.05 * 2 ** int(self.request.retries))
            log.info("%s: %s; retry in %.2f s", stage, exc, delay)
            raise self.retry(exc=exc, countdown=delay) from exc
        except ModelFailure as exc:
            log.warning("%s: analysis failed (%s); retrying", stage, exc)
            raise self.retry(exc=exc, countdown=0.2, max_retries=None) from exc
        except TRANSIENT_ERRORS as exc:
            delay = min(30.0, 0.5 * 2 ** int(self.request.retries))
            log.warning("%s: transient failure (%s); retry in %.1f s", stage, exc, delay)
            raise self.retry(exc=exc, countdown=delay) from exc

    # weak=False: these are closures; with Celery's default weak references they would be
    # garbage-collected and never run.
    @worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def _preload(**_: Any) -> None:
        # Load models before the first job so its queue time is not the model load time.
        get_runtime().models()

    @worker_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def _close(**_: Any) -> None:
        if runtime is not None:
            runtime.close()

    return app


def run_worker(definition: StageDefinition, settings: Settings | None = None) -> None:
    """The one entry point of every stage's worker, in development and production
    (`faceval worker <stage>`, `python -m services.<stage>`): preflight, models, Celery."""
    settings = settings or get_settings()
    preflight(definition, settings)
    logging.basicConfig(
        level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Models load here, before Celery starts: a model that cannot load ends the process with
    # its error (Celery would swallow it in a signal handler and report the worker ready).
    logging.getLogger("celery.worker.request").addFilter(LostAckIsRedelivery())
    # Celery logs every task received and succeeded at INFO: two log lines per job on the
    # hot path that say nothing the stage metrics and the transaction's log line do not.
    # Its warnings and errors (failures, retries, lost acks) are still logged.
    if settings.log_level.upper() != "DEBUG":
        for name in ("celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
    runtime = StageRuntime(definition, settings)
    runtime.models()
    app = create_worker_app(definition, settings, runtime)
    declare_queues(app)
    port = settings.metrics_port or METRICS_PORT[definition.name]
    start_http_server(port, addr="0.0.0.0")
    log.info("%s worker: metrics on :%d, consuming %s", definition.name, port,
             queue_name(definition.name, settings.queue_prefix))  # fmt: skip
    app.worker_main(
        [
            "worker",
            "--queues",
            queue_name(definition.name, settings.queue_prefix),
            "--pool",
            "threads",
            "--concurrency",
            str(settings.worker_concurrency),
            "--hostname",
            f"{definition.name}-{os.getpid()}@%h",
            "--loglevel",
            settings.log_level,
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
    )


# --- preflight: fail fast ------------------------------------------------------------------
# Celery swallows exceptions raised while preloading models (the worker would report ready
# and then fail every job), so a worker checks its registry entries before anything else:
# offline and bundled models are materialised and verified, production files present in the
# model directory must verify, absent ones are recorded as not run later.


def check_models(stage: str, settings: Settings) -> list[str]:
    """What is wrong with the stage's model files (empty when the worker may start)."""
    problems = []
    try:
        registry = Registry.from_settings(settings)
    except (OSError, ValueError) as exc:
        return [f"cannot read the model manifest: {exc}"]
    # A per-model setting for a name the manifest lacks, or a limit its model lacks, would
    # be ignored while the operator believes it applied.
    problems += [
        f"FACEVAL_MODELS sets model {name!r}, which is not in the manifest {registry.manifest.path}"
        for name in settings.models
        if name not in registry.manifest.entries
    ]
    for entry in registry.manifest:
        if entry.stage != stage:
            continue
        try:
            limit_values(entry, settings)
        except ValueError as exc:
            problems.append(str(exc))
        if entry.file is None:
            continue
        try:
            if entry.source.kind in ("package", "bundled"):
                registry.require(entry.name, materialise_from_package=True)
            else:
                registry.optional(entry.name)
        except ModelNotReady as exc:
            problems.append(str(exc))
    return problems


def preflight(definition: StageDefinition, settings: Settings) -> None:
    problems = check_models(definition.name, settings)
    if problems:
        for problem in problems:
            print(f"{definition.name} worker cannot start: {problem}", file=sys.stderr)
        sys.exit(2)
