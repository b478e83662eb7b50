"""`make chaos`: the fault suite. A stack on servers of its own (a private RabbitMQ node,
Redis and MongoDB-wire server, loopback only), validations driven through the gateway by
clients that retry as a careful client would (same `Idempotency-Key`, honouring
`Retry-After`), and one fault injected per phase. Then every transaction is read back and
the invariants are tabulated: nothing lost, nothing counted twice, nothing left pending, no
images left behind, no plain 500, counters equal to MongoDB.

    python -m tools.chaos [--per-phase 30] [--phases all|quick|NAME,...]

Bounded: about 10 minutes on 2 cores with the defaults (`--phases quick` for the short
version the integration test runs).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import select
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from gateway.app import BODY_OVERHEAD_BYTES, MAX_FILES_PER_REQUEST
from shared.imaging import encode_jpeg
from shared.pipeline import STAGES
from shared.storage import Doc, Store
from tools.samples import astronaut_pair, no_face_pair
from tools.stack import Stack, create_client, isolated_stack, stop_isolated

#: Short enough that a frozen worker visibly ends in `timeout`, long enough that a broker or
#: store restart under load never does.
DEADLINE_SECONDS = 60
CHAOS_ENV = {
    "FACEVAL_TRANSACTION_DEADLINE_SECONDS": str(DEADLINE_SECONDS),
    "FACEVAL_SWEEP_INTERVAL_SECONDS": "1",
    "FACEVAL_REPUBLISH_GRACE_SECONDS": "5",
    "FACEVAL_BODY_READ_TIMEOUT_SECONDS": "5",
    "FACEVAL_HEADER_READ_TIMEOUT_SECONDS": "5",
    "FACEVAL_RATE_LIMIT_PER_MINUTE": "100000",
    "FACEVAL_MAX_QUEUE_DEPTH": "100000",
    "FACEVAL_LOG_LEVEL": "WARNING",
}


@dataclass
class Outcome:
    """What the clients saw."""

    #: key -> transaction id of every submission that got a 2xx.
    accepted: dict[str, str] = field(default_factory=dict)
    #: key -> phase, for every submission attempted.
    phase_of: dict[str, str] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    plain_5xx: int = 0
    unavailable_without_retry_after: int = 0
    gave_up: int = 0
    retries: int = 0
    #: phase -> a note on the fault (timings, what a hostile client saw).
    notes: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Chaos:
    def __init__(self, stack: Stack, key: str) -> None:
        self.stack = stack
        self.key = key
        self.outcome = Outcome()
        accepted_pair, rejected_pair = astronaut_pair(), no_face_pair()
        self.pairs = [tuple(encode_jpeg(i) for i in accepted_pair),
                      tuple(encode_jpeg(i) for i in rejected_pair)]  # fmt: skip

    # --- clients ---------------------------------------------------------------------------

    def submit_one(self, phase: str, attempts: int = 12) -> None:
        key = uuid.uuid4().hex
        near, far = random.choice(self.pairs)
        files = {"near": ("near.jpg", near, "image/jpeg"), "far": ("far.jpg", far, "image/jpeg")}
        data = {"user_id": "12345678", "client_reference": f"{phase}:{key}"}
        headers = {"X-API-Key": self.key, "Idempotency-Key": key}
        out = self.outcome
        with out.lock:
            out.phase_of[key] = phase
        for attempt in range(attempts):
            try:
                response = httpx.post(f"{self.stack.url}/v1/validations", files=files,
                                      data=data, headers=headers, timeout=20)  # fmt: skip
            except httpx.HTTPError as exc:
                with out.lock:
                    out.statuses[f"conn:{type(exc).__name__}"] += 1
                    out.retries += 1
                time.sleep(min(4.0, 0.5 * 2**attempt))
                continue
            json_body = response.headers.get("content-type", "").startswith("application/json")
            with out.lock:
                out.statuses[str(response.status_code)] += 1
                if response.status_code >= 500 and not json_body:
                    out.plain_5xx += 1
                if response.status_code == 503 and "retry-after" not in response.headers:
                    out.unavailable_without_retry_after += 1
            if response.status_code in (200, 202):
                with out.lock:
                    out.accepted[key] = response.json()["transaction_id"]
                return
            if response.status_code in (429, 503) or response.status_code >= 500:
                with out.lock:
                    out.retries += 1
                time.sleep(min(3.0, float(response.headers.get("retry-after", "1"))))
                continue
            with out.lock:
                out.failures.append(f"{phase}: unexpected {response.status_code} {response.text}")
            return
        with out.lock:
            out.gave_up += 1

    @contextlib.contextmanager
    def load(self, phase: str, count: int, rate: float) -> Iterator[None]:
        """Submit `count` validations at `rate`/s in the background while the block runs."""
        pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix=f"chaos-{phase}")
        futures = []

        def feed() -> None:
            for _ in range(count):
                futures.append(pool.submit(self.submit_one, phase))
                time.sleep(1.0 / rate)

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        try:
            yield
        finally:
            feeder.join()
            for future in futures:
                future.result()
            pool.shutdown()

    # --- faults ----------------------------------------------------------------------------

    def scrape_validations(self) -> float:
        """faceval_validations_total summed over the gateway and every worker."""
        ports = [self.stack.port, *self.stack.metrics_ports.values()]
        total = 0.0
        for port in ports:
            path = "/metrics"
            try:
                text = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5).text
            except httpx.HTTPError:
                continue
            for line in text.splitlines():
                if line.startswith("faceval_validations_total{"):
                    total += float(line.rsplit(" ", 1)[1])
        return total

    def restart_gateway(self) -> None:
        self.stack._spawn("gateway", [sys.executable, "-m", "gateway"])

    def kill(self, name: str) -> None:
        self.stack.stop_process(name, signal.SIGKILL, timeout=10)

    def phase_baseline(self, n: int) -> None:
        with self.load("baseline", n, rate=4):
            pass

    def phase_broker_kill(self, n: int) -> None:
        node = self.stack.rabbit
        assert node is not None
        with self.load("broker_kill", n, rate=4):
            time.sleep(n / 8)
            started = time.monotonic()
            node.kill()
            time.sleep(1.0)
            node.start()
            self.outcome.notes["broker_kill"] = (
                f"RabbitMQ SIGKILLed under load, back in {time.monotonic() - started:.1f} s"
            )

    def run_phase(self, name: str, n: int) -> None:
        """One phase, then wait until its transactions ended, so that each phase's outcome
        is its own fault's (a backlog left by one fault never meets the next)."""
        PHASES[name](self, n)
        self.wait_settled(DEADLINE_SECONDS + 30)

    def phase_redis_restart(self, n: int) -> None:
        self.wait_settled(DEADLINE_SECONDS + 30)  # counters and MongoDB compared at rest
        before = self.scrape_validations()
        finished_before = self.count_final()
        with self.load("redis_restart", n, rate=4):
            time.sleep(n / 8)
            self.kill("redis")
            time.sleep(1.0)
            self.stack.start_redis()
        self.wait_settled(DEADLINE_SECONDS + 30)
        counted = self.scrape_validations() - before
        finished = self.count_final() - finished_before
        self.outcome.notes["redis_restart"] = (
            f"Redis SIGKILLed and restarted empty; validations counted {counted:.0f}, "
            f"finished in MongoDB {finished}"
        )
        if counted != finished:
            self.outcome.failures.append(
                f"redis_restart: counters {counted:.0f} != MongoDB {finished}"
            )

    def phase_mongo_stall(self, n: int) -> None:
        mongo = self.stack.processes["mongo"]
        with self.load("mongo_stall", n, rate=4):
            time.sleep(n / 8)
            mongo.send_signal(signal.SIGSTOP)
            time.sleep(8)
            mongo.send_signal(signal.SIGCONT)
        self.outcome.notes["mongo_stall"] = "MongoDB-wire server SIGSTOPped for 8 s"

    def phase_mongo_outage(self, n: int) -> None:
        with self.load("mongo_outage", n, rate=4):
            time.sleep(n / 8)
            self.kill("mongo")
            time.sleep(5)
            self.stack.ensure_infrastructure()  # the same storage: a restart
        self.outcome.notes["mongo_outage"] = "MongoDB-wire server SIGKILLed for 5 s, restarted"

    def phase_worker_kills(self, n: int) -> None:
        with self.load("worker_kills", n, rate=4):
            for stage in STAGES:
                time.sleep(max(0.5, n / 4 / len(STAGES)))
                self.kill(stage)
                self.stack.start_worker(stage)
        self.outcome.notes["worker_kills"] = f"each of {len(STAGES)} workers SIGKILLed once"

    def phase_gateway_kill(self, n: int) -> None:
        with self.load("gateway_kill", n, rate=4):
            time.sleep(n / 8)
            self.kill("gateway")
            time.sleep(0.5)
            self.restart_gateway()
        self.outcome.notes["gateway_kill"] = "gateway SIGKILLed under load and restarted"

    def phase_frozen_worker(self, n: int) -> None:
        stage = "quality"
        proc = self.stack.processes[stage]
        with self.load("frozen_worker", n, rate=2):
            proc.send_signal(signal.SIGSTOP)
        time.sleep(DEADLINE_SECONDS + 5)
        proc.send_signal(signal.SIGCONT)
        self.outcome.notes["frozen_worker"] = (
            f"{stage} worker SIGSTOPped past the {DEADLINE_SECONDS} s deadline: its "
            "transactions end `timeout` (expected), late results are ignored"
        )

    def phase_hostile(self, _: int) -> None:
        limit = MAX_FILES_PER_REQUEST * self.stack.settings.max_upload_bytes + BODY_OVERHEAD_BYTES
        sent, status = oversize_chunked_upload(self.stack.port, self.key, 100 * 2**20)
        slow_head = slowloris_head(self.stack.port)
        slow_body = stalled_body(self.stack.port, self.key)
        note = (
            f"chunked 100 MB upload: {status} after {sent / 2**20:.1f} MB sent (limit "
            f"{limit / 2**20:.1f} MB); slowloris head closed after {slow_head:.1f} s; body "
            f"shorter than its Content-Length: {slow_body[0]} after {slow_body[1]:.1f} s"
        )
        self.outcome.notes["hostile"] = note
        if status != 413 or sent > limit + 8 * 2**20:
            self.outcome.failures.append(f"hostile: oversize chunked body: {note}")
        if slow_head > self.stack.settings.header_read_timeout_seconds + 5:
            self.outcome.failures.append(f"hostile: slowloris held {slow_head:.1f} s")
        if slow_body[0] != 408:
            self.outcome.failures.append(f"hostile: stalled body got {slow_body[0]}")

    # --- reading back ----------------------------------------------------------------------

    def with_store(self, work: Callable[[Store], Any]) -> Any:
        async def go() -> Any:
            store = Store(self.stack.settings.mongo_url, self.stack.settings.mongo_db)
            try:
                return await work(store)
            finally:
                store.close()

        return asyncio.run(go())

    def all_transactions(self) -> list[Doc]:
        async def read(store: Store) -> list[Doc]:
            fields = {"status": 1, "summary_reason": 1, "client_reference": 1}
            return [doc async for doc in store.transactions.find({}, fields)]

        return list(self.with_store(read))

    def count_final(self) -> int:
        return sum(1 for doc in self.all_transactions() if doc["status"] == "completed")

    def wait_settled(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                if not any(d["status"] == "pending" for d in self.all_transactions()):
                    return
            time.sleep(1)

    def report(self) -> Report:
        self.wait_settled(DEADLINE_SECONDS + 60)
        docs = self.all_transactions()
        by_id = {d["_id"]: d for d in docs}
        per_key = Counter(str(d.get("client_reference")).split(":", 1)[-1] for d in docs)
        cache = redis.Redis.from_url(self.stack.settings.redis_url)
        image_keys = [k.decode() for k in cache.scan_iter("faceval:img:*")]
        left = {k.split(":")[2] for k in image_keys}
        ended_with_images = [
            t for t in left
            if t in by_id and by_id[t]["status"] == "completed"
            and by_id[t].get("summary_reason") != "internal_error"
        ]  # fmt: skip
        out = self.outcome
        finals: dict[str, Counter[str]] = {}
        for doc in docs:
            phase = str(doc.get("client_reference")).split(":", 1)[0]
            finals.setdefault(phase, Counter())[str(doc.get("summary_reason") or "pending")] += 1
        return Report(
            submitted=len(out.phase_of),
            accepted=len(out.accepted),
            stored=len(docs),
            lost=sorted(t for t in out.accepted.values() if t not in by_id),
            pending=sum(1 for d in docs if d["status"] == "pending"),
            double=sorted(k for k, n in per_key.items() if n > 1),
            images_left=sorted(ended_with_images),
            finals=finals,
            statuses=out.statuses,
            plain_5xx=out.plain_5xx,
            unavailable_without_retry_after=out.unavailable_without_retry_after,
            gave_up=out.gave_up,
            retries=out.retries,
            notes=out.notes,
            failures=out.failures,
            counted=self.scrape_validations(),
        )


@dataclass
class Report:
    submitted: int
    accepted: int
    stored: int
    lost: list[str]
    pending: int
    double: list[str]
    images_left: list[str]
    finals: dict[str, Counter[str]]
    statuses: Counter[str]
    plain_5xx: int
    unavailable_without_retry_after: int
    gave_up: int
    retries: int
    notes: dict[str, str]
    failures: list[str]
    counted: float

    def problems(self) -> list[str]:
        found = list(self.failures)
        unexpected_timeouts = sum(
            c["timeout"] for phase, c in self.finals.items() if phase != "frozen_worker"
        )
        checks = {
            "lost": len(self.lost),
            "pending": self.pending,
            "double-recorded": len(self.double),
            "images left": len(self.images_left),
            "plain 5xx": self.plain_5xx,
            "503 without Retry-After": self.unavailable_without_retry_after,
            "gave up": self.gave_up,
            "timeouts outside the frozen-worker phase": unexpected_timeouts,
            "accepted but not stored": self.accepted - min(self.accepted, self.stored),
        }
        found += [f"{name}: {value}" for name, value in checks.items() if value]
        return found

    def render(self) -> str:
        lines = [
            "| phase | transactions | final by summary |",
            "|---|---|---|",
        ]
        for phase, counts in sorted(self.finals.items()):
            summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
            lines.append(f"| {phase} | {sum(counts.values())} | {summary} |")
        lines += [
            "",
            "| invariant | value |",
            "|---|---|",
            f"| submitted (distinct Idempotency-Keys) | {self.submitted} |",
            f"| accepted (2xx) | {self.accepted} |",
            f"| transactions in MongoDB | {self.stored} |",
            f"| lost (accepted, not stored) | {len(self.lost)} |",
            f"| pending after the deadline | {self.pending} |",
            f"| double-recorded (>1 transaction per key) | {len(self.double)} |",
            f"| images left in Redis after the end | {len(self.images_left)} |",
            f"| plain-text 5xx | {self.plain_5xx} |",
            f"| 503 without Retry-After | {self.unavailable_without_retry_after} |",
            f"| client retries / gave up | {self.retries} / {self.gave_up} |",
            f"| HTTP statuses seen | {dict(sorted(self.statuses.items()))} |",
            f"| faceval_validations_total (live processes) | {self.counted:.0f} |",
            "",
        ]
        lines += [f"- {phase}: {note}" for phase, note in self.notes.items()]
        problems = self.problems()
        lines.append("")
        lines.append("PROBLEMS: " + "; ".join(problems) if problems else "ALL INVARIANTS HOLD")
        return "\n".join(lines)


# --- hostile clients (raw sockets: an HTTP library would not misbehave on purpose) --------


def oversize_chunked_upload(port: int, key: str, total: int) -> tuple[int, int]:
    """Send a chunked multipart body of `total` bytes; (bytes sent before the server
    answered or closed, HTTP status or 0)."""
    head = (
        f"POST /v1/validations HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {key}\r\n"
        "Content-Type: multipart/form-data; boundary=XyZ\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    part = b'--XyZ\r\nContent-Disposition: form-data; name="near"; filename="a.jpg"\r\n\r\n'
    chunk = b"\xff" * 65536
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")
        while sent < total:
            readable, _, _ = select.select([sock], [], [], 0)
            if readable:
                break
            try:
                sock.sendall(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            except OSError:
                break
            sent += len(chunk)
        return sent, _status(sock)


def _status(sock: socket.socket) -> int:
    sock.settimeout(10)
    try:
        first = sock.recv(64)
    except OSError:
        return 0
    parts = first.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0


def slowloris_head(port: int, interval: float = 1.5, limit: float = 40.0) -> float:
    """Send a request head one byte every `interval` s; seconds until the server closed."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            if time.monotonic() - started > limit:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                break
            readable, _, _ = select.select([sock], [], [], interval)
            if readable and not sock.recv(1):
                break
    return time.monotonic() - started


def stalled_body(port: int, key: str) -> tuple[int, float]:
    """Announce a 10,000-byte body, send the start of a valid one, then wait: (status,
    seconds)."""
    started = time.monotonic()
    part = b'--XyZ\r\nContent-Disposition: form-data; name="user_id"\r\n\r\n1234'
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            (f"POST /v1/validations HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n"
             "Content-Type: multipart/form-data; boundary=XyZ\r\n"
             "Content-Length: 10000\r\n\r\n").encode() + part
        )  # fmt: skip
        sock.settimeout(60)
        return _status(sock), time.monotonic() - started


PHASES: dict[str, Callable[[Chaos, int], None]] = {
    "baseline": Chaos.phase_baseline,
    "broker_kill": Chaos.phase_broker_kill,
    "redis_restart": Chaos.phase_redis_restart,
    "mongo_stall": Chaos.phase_mongo_stall,
    "mongo_outage": Chaos.phase_mongo_outage,
    "worker_kills": Chaos.phase_worker_kills,
    "gateway_kill": Chaos.phase_gateway_kill,
    "hostile": Chaos.phase_hostile,
    "frozen_worker": Chaos.phase_frozen_worker,
}
QUICK = ("broker_kill", "redis_restart", "worker_kills", "gateway_kill", "hostile")


def run(phases: list[str], per_phase: int, state_dir: Path | None = None) -> Report:
    state = state_dir or Path(tempfile.mkdtemp(prefix="faceval-chaos-"))
    stack = isolated_stack(state, CHAOS_ENV)
    try:
        _, key = asyncio.run(create_client(stack.settings, f"chaos-{uuid.uuid4().hex[:6]}"))
        chaos = Chaos(stack, key)
        for name in phases:
            started = time.monotonic()
            chaos.run_phase(name, per_phase)
            print(f"phase {name}: {time.monotonic() - started:.0f} s", flush=True)
        return chaos.report()
    finally:
        stop_isolated(stack)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--per-phase", type=int, default=40)
    parser.add_argument("--phases", default="all", help="all, quick, or names with commas")
    parser.add_argument("--state-dir", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.phases == "all":
        phases = list(PHASES)
    elif args.phases == "quick":
        phases = list(QUICK)
    else:
        phases = args.phases.split(",")
    os.environ.setdefault("FACEVAL_LOG_LEVEL", "WARNING")
    started = time.monotonic()
    report = run(phases, args.per_phase, args.state_dir)
    print(report.render())
    print(f"\n{time.monotonic() - started:.0f} s in all")
    return 1 if report.problems() else 0


if __name__ == "__main__":
    raise SystemExit(main())
