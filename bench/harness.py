"""An isolated stack for benchmarks, and a driver that injects transactions without the gateway.

Like bench/soak.py: a fresh MongoDB-wire server on a free port, a unique queue prefix
(`faceval-bench-...`), a temporary state directory; RabbitMQ and Redis are the machine's.
Workers (real or bench.noop_worker) and the gateway are separate processes started and
stopped here; on close every queue with the bench prefix is deleted.

`Driver` creates transactions the way the gateway's submit does (transaction document from
`transactions.new_transaction`, images in Redis with a TTL) and publishes the first stage
with `shared.messaging.publish_job`; the end of a transaction is the `faceval:done:<id>`
Redis message the last stage's finalisation publishes, timed in this process.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import pika
import psutil
import redis
from pymongo import MongoClient

from bench.pairs import BenchPair
from shared import transactions
from shared.blobstore import image_key
from shared.messaging import make_celery, publish_job
from shared.pipeline import STAGES, queue_name
from shared.queues import pika_url, stage_queue_stats
from shared.schema import StageJob
from shared.settings import Settings, get_settings
from shared.storage import expiry
from tools.stack import NATIVE_THREADS, Stack, StackError, free_port, port_open, wait_for_port

T = TypeVar("T")

#: Every benchmark wait is bounded: a stuck transaction fails the run instead of hanging it.
DONE_TIMEOUT_S = 120.0


class BenchError(RuntimeError):
    """A benchmark could not measure what it should (a stuck transaction, a dead process)."""


@dataclass
class BenchEnv:
    """Infrastructure plus the FaceVal processes of one benchmark run."""

    label: str
    settings: Settings
    stack: Stack
    state_dir: Path
    _worker_names: list[str] = field(default_factory=list)

    @classmethod
    def create(
        cls, label: str, extra_env: Mapping[str, str] | None = None, mongo_options: str = ""
    ) -> BenchEnv:
        """`mongo_options`: MongoDB URL options added to the configured URL's own (the
        default URL's `retryWrites=false`, for one) for every process."""
        state = Path(tempfile.mkdtemp(prefix=f"faceval-bench-{label}-"))
        prefix = f"faceval-bench-{label}-{uuid.uuid4().hex[:6]}"
        get_settings.cache_clear()
        configured = urlsplit(get_settings().mongo_url).query
        options = "&".join(o for o in (configured, mongo_options) if o)
        query = f"?{options}" if options else ""
        os.environ.update({
            "FACEVAL_MONGO_URL": f"mongodb://127.0.0.1:{free_port()}/{query}",
            "FACEVAL_QUEUE_PREFIX": prefix,
            "FACEVAL_STATE_DIR": str(state),
            # The gateway benchmark sends far more than a client's default minute allows.
            "FACEVAL_RATE_LIMIT_PER_MINUTE": "1000000",
            **(extra_env or {}),
        })  # fmt: skip
        get_settings.cache_clear()
        settings = get_settings()
        stack = Stack(settings=settings, port=free_port(), state_dir=state)
        env = cls(label=label, settings=settings, stack=stack, state_dir=state)
        try:
            stack.ensure_infrastructure()
        except BaseException:
            env.close()
            raise
        return env

    @property
    def prefix(self) -> str:
        return self.settings.queue_prefix

    # --- processes -------------------------------------------------------------------------

    def start_workers(
        self, kind: str, replicas: int | Mapping[str, int] = 1,
        env: Mapping[str, str] | None = None,
    ) -> dict[str, int]:  # fmt: skip
        """Start worker processes ("real" or "noop"), `replicas` per stage; name -> pid.

        Each gets what `Stack.start_worker` gives a production worker (one thread per native
        pool, unless this environment sets them), then `env`.
        """
        per_stage = {s: replicas if isinstance(replicas, int) else replicas.get(s, 1)
                     for s in STAGES}  # fmt: skip
        pids: dict[str, int] = {}
        for stage in STAGES:
            module = f"services.{stage}" if kind == "real" else "bench.noop_worker"
            argv = [sys.executable, "-m", module, *([] if kind == "real" else [stage])]
            for index in range(per_stage[stage]):
                name = f"{kind}-{stage}-{index}"
                self.stack._spawn(name, argv, {**worker_defaults(),
                                               "FACEVAL_METRICS_PORT": str(free_port()),
                                               **(env or {})})  # fmt: skip
                self._worker_names.append(name)
                pids[name] = self.stack.processes[name].pid
        self.wait_consumers(per_stage)
        return pids

    def wait_consumers(self, per_stage: Mapping[str, int], seconds: float = 120.0) -> None:
        deadline = time.monotonic() + seconds
        seen: dict[str, int] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(Exception):
                stats = stage_queue_stats(self.settings.broker_url, self.prefix)
                seen = {s: q.consumers for s, q in stats.items()}
                if all(seen.get(s, 0) >= n for s, n in per_stage.items()):
                    return
            time.sleep(0.3)
        raise BenchError(f"workers not consuming within {seconds:.0f} s: {seen}")

    def wait_models_loaded(self, seconds: float = 120.0) -> None:
        """Real workers log 'models loaded' once their models are in memory."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self._check_alive()
            logs = [self.stack.log_dir / f"{n}.log" for n in self._worker_names]
            if all(p.exists() and "models loaded" in p.read_text(errors="replace") for p in logs):
                return
            time.sleep(0.3)
        raise BenchError("workers did not load their models in time")

    def worker_pids(self) -> dict[str, int]:
        return {n: self.stack.processes[n].pid for n in self._worker_names}

    def stop_workers(self) -> None:
        for name in self._worker_names:
            self.stack.stop_process(name)
        self._worker_names.clear()

    def freeze_workers(self, frozen: bool) -> None:
        """SIGSTOP/SIGCONT the workers: consumers stay registered but take nothing."""
        for pid in self.worker_pids().values():
            proc = psutil.Process(pid)
            proc.suspend() if frozen else proc.resume()

    def start_gateway(self, env: Mapping[str, str] | None = None) -> str:
        port = free_port()
        self.stack.port = port
        self.stack._spawn("gateway", [sys.executable, "-m", "gateway"],
                          {"FACEVAL_PORT": str(port), **(env or {})})  # fmt: skip
        if not wait_for_port("127.0.0.1", port, 60):
            self._check_alive()
            raise BenchError("the gateway did not open its port within 60 s")
        return self.stack.url

    def stop_gateway(self) -> None:
        self.stack.stop_process("gateway")

    def _check_alive(self) -> None:
        for name, proc in self.stack.processes.items():
            if proc.poll() is not None:
                raise BenchError(f"{name} exited with {proc.returncode}; "
                                 f"see {self.stack.log_dir / name}.log")  # fmt: skip

    def restart_mongo(self) -> None:
        """A fresh MongoDB-wire server (empty storage, no server-side state) on the same port.

        Between sections and repetitions, so that none pays for what an earlier one left
        behind (the embedded server's cost per write grows with the writes it has seen;
        see bench.mongo_ops). Running workers reconnect by themselves (pymongo), so
        nothing may be in flight.
        """
        self.stack.stop_process("mongo")
        shutil.rmtree(self.state_dir / "mongo", ignore_errors=True)
        deadline = time.monotonic() + 10
        while port_open("127.0.0.1", self._mongo_port()) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.stack.ensure_infrastructure()

    def _mongo_port(self) -> int:
        return urlsplit(self.settings.mongo_url).port or 27017

    def mongo_pid(self) -> int | None:
        proc = self.stack.processes.get("mongo")
        return proc.pid if proc else None

    # --- queues ----------------------------------------------------------------------------

    def purge_queues(self) -> int:
        return _queue_op(self.settings.broker_url, self._queue_names(), delete=False)

    def _queue_names(self) -> list[str]:
        return [queue_name(s, self.prefix) for s in STAGES] + [f"{self.prefix}.dead_letters"]

    def close(self) -> None:
        try:
            self.stack.stop()
        finally:
            with contextlib.suppress(Exception):
                _queue_op(self.settings.broker_url, self._queue_names(), delete=True)
            shutil.rmtree(self.state_dir, ignore_errors=True)


def worker_defaults() -> dict[str, str]:
    """The environment `Stack.start_worker` adds for a production worker."""
    return {k: v for k, v in NATIVE_THREADS.items() if k not in os.environ}


@contextlib.contextmanager
def child_environment(extra: Mapping[str, str]) -> Iterator[None]:
    """Processes spawned inside inherit `extra` (thread-pool sizes are read at their start)."""
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_in_child(env: Mapping[str, str], fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` in a fresh (spawned) process with `env`: native thread pools are sized
    when NumPy and OpenCV load, which this process did long ago."""
    ctx = mp.get_context("spawn")  # this process has threads: never fork it
    with child_environment(env), ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(fn, *args).result(timeout=600)


def _queue_op(broker_url: str, names: Sequence[str], delete: bool) -> int:
    """Purge or delete queues; returns the messages purged. Missing queues are skipped."""
    params = pika.URLParameters(pika_url(broker_url))
    params.socket_timeout = 5
    params.connection_attempts = 1
    connection = pika.BlockingConnection(params)
    purged = 0
    try:
        for name in names:
            channel = connection.channel()
            try:
                if delete:
                    channel.queue_delete(name)
                else:
                    purged += int(channel.queue_purge(name).method.message_count)
                channel.close()
            except pika.exceptions.ChannelClosedByBroker:
                continue  # never declared
    finally:
        connection.close()
    return purged


class DoneListener:
    """Times `<prefix>:<id>` Redis messages (psubscribe) for the ids this process is waiting on.

    One thread, started before the first publish so no end is missed; ids not registered
    (another stack's transactions on the same Redis) are ignored.
    """

    def __init__(self, redis_url: str, channel_prefix: str) -> None:
        self._redis = redis.Redis.from_url(redis_url)
        self._prefix = channel_prefix
        self._pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        self._pubsub.psubscribe(f"{channel_prefix}*")
        self._done: dict[str, float] = {}
        self._waiting: set[str] = set()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-done", daemon=True)
        self._thread.start()

    def expect(self, ids: Sequence[str]) -> None:
        with self._cond:
            self._waiting.update(ids)

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.2)
            if message is None or message.get("type") != "pmessage":
                continue
            now = time.perf_counter()
            channel = message["channel"]
            name = channel.decode() if isinstance(channel, bytes) else str(channel)
            tid = name[len(self._prefix) :]
            with self._cond:
                if tid in self._waiting and tid not in self._done:
                    self._done[tid] = now
                    self._cond.notify_all()

    def wait(self, ids: Sequence[str], timeout: float = DONE_TIMEOUT_S) -> dict[str, float]:
        """Completion times (perf_counter seconds) of `ids`; raises if any is missing."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not all(i in self._done for i in ids):
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [i for i in ids if i not in self._done]
                    raise BenchError(f"{len(missing)} of {len(ids)} not finished in {timeout} s")
                self._cond.wait(min(left, 0.5))
            return {i: self._done.pop(i) for i in ids}

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        with contextlib.suppress(Exception):
            self._pubsub.close()
        self._redis.close()


class Driver:
    """Creates transactions like the gateway and publishes their first stage."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = redis.Redis.from_url(settings.redis_url)
        self.mongo: MongoClient[dict[str, Any]] = MongoClient(
            settings.mongo_url, tz_aware=True, uuidRepresentation="standard",
            serverSelectionTimeoutMS=5000,
        )  # fmt: skip
        self.transactions = self.mongo[settings.mongo_db]["transactions"]
        self.celery = make_celery(settings, name="faceval-bench-driver")
        self.listener = DoneListener(settings.redis_url, "faceval:done:")
        self._jobs: dict[str, list[StageJob]] = {}

    def prepare(self, pair: BenchPair) -> str:
        """Images and transaction document in place, nothing published yet."""
        tid = uuid.uuid4().hex
        doc = transactions.new_transaction(
            transaction_id=tid, client_id="bench", client_name="bench",
            user_name="bench", documento="bench", process_guid=None,
            client_reference=pair.name, service="bench", api_hash="bench",
            images={s: {"bytes": len(d)} for s, d in (("near", pair.near), ("far", pair.far))},
            expires_at=None, deadline_seconds=self.settings.transaction_deadline_seconds,
        )  # fmt: skip
        doc["expires_at"] = expiry(doc["created_at"], 1)
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(image_key(tid, "near"), pair.near, ex=self.settings.image_ttl_seconds)
            pipe.set(image_key(tid, "far"), pair.far, ex=self.settings.image_ttl_seconds)
            pipe.execute()
        self.transactions.insert_one(doc)
        self._jobs[tid] = transactions.first_stage_jobs(doc)
        self.listener.expect([tid])
        return tid

    def publish(self, tid: str) -> float:
        """Publish both first-stage jobs; returns the perf_counter time just before."""
        jobs = self._jobs.pop(tid)
        started = time.perf_counter()
        for job in jobs:
            publish_job(self.celery, STAGES[0], job)
        return started

    def wait(self, ids: Sequence[str], timeout: float = DONE_TIMEOUT_S) -> dict[str, float]:
        return self.listener.wait(ids, timeout)

    def clear(self) -> None:
        """Drop the transactions (only while nothing is in flight): every repetition starts
        from an empty collection, as on a fresh stack."""
        self.transactions.drop()

    def results(self, tids: Sequence[str]) -> dict[str, dict[str, Any]]:
        docs = self.transactions.find({"_id": {"$in": list(tids)}})
        return {d["_id"]: d for d in docs}

    def close(self) -> None:
        self.listener.close()
        self.mongo.close()
        self.redis.close()
        with contextlib.suppress(Exception):
            self.celery.close()


class Target(Protocol):
    """Something transactions go through: FaceVal (Driver) or the raw chain."""

    def prepare(self, pair: BenchPair) -> str: ...

    def publish(self, tid: str) -> float: ...

    def wait(self, ids: Sequence[str], timeout: float = DONE_TIMEOUT_S) -> dict[str, float]: ...


@dataclass
class RunTimes:
    """Latencies (ms) and completion times of one closed-loop or burst run."""

    latencies_ms: list[float]
    completions: list[float]
    started: float
    ids: list[str]


def closed_loop(target: Target, pairs: Sequence[BenchPair]) -> RunTimes:
    """One transaction in flight at a time: latency without queueing."""
    latencies, completions, ids = [], [], []
    first = time.perf_counter()
    for pair in pairs:
        tid = target.prepare(pair)
        started = target.publish(tid)
        done = target.wait([tid])[tid]
        latencies.append((done - started) * 1e3)
        completions.append(done)
        ids.append(tid)
    return RunTimes(latencies, completions, first, ids)


def burst(target: Target, pairs: Sequence[BenchPair]) -> RunTimes:
    """Everything prepared first, then published at once: the saturated rate."""
    ids = [target.prepare(pair) for pair in pairs]
    starts = {tid: target.publish(tid) for tid in ids}
    done = target.wait(ids)
    latencies = [(done[t] - starts[t]) * 1e3 for t in ids]
    return RunTimes(latencies, list(done.values()), min(starts.values()), ids)


def _with_children(pid: int) -> list[psutil.Process]:
    """A worker and its live descendants (the identity worker's analysis processes)."""
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def cpu_seconds(pids: Sequence[int]) -> float:
    """User + system CPU seconds of these processes and their live descendants so far (0
    for one that has gone)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            for proc in _with_children(pid):
                with contextlib.suppress(psutil.Error):
                    times = proc.cpu_times()
                    total += times.user + times.system
    return total


def rss_mib(pids: Mapping[str, int]) -> dict[str, float | None]:
    """Resident memory of each worker with its descendants."""
    out: dict[str, float | None] = {}
    for name, pid in pids.items():
        try:
            rss = 0
            for proc in _with_children(pid):
                with contextlib.suppress(psutil.Error):
                    rss += proc.memory_info().rss
            out[name] = round(rss / 2**20, 1)
        except psutil.Error:
            out[name] = None
    return out


@contextlib.contextmanager
def bench_env(
    label: str, extra_env: Mapping[str, str] | None = None, mongo_options: str = ""
) -> Iterator[BenchEnv]:
    try:
        env = BenchEnv.create(label, extra_env, mongo_options)
    except StackError as exc:
        raise BenchError(f"could not start the infrastructure: {exc}") from exc
    try:
        yield env
    finally:
        env.close()
