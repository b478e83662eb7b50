"""`faceval simulate`: realistic traffic through the real pipeline, for the ETL to read.

Several clients, each with users who go through a process: a first capture that is good
or fails in one of the usual ways, then, after a rejection, usually another try with a
better capture, sometimes giving up. Everything goes through the gateway over HTTP, so
the transactions are recorded exactly as production records them. `--synthetic N`
instead writes N synthetic documents (scale tests only; marked and kept out of reports).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from etl.images import KINDS, jpeg_bank
from shared.settings import Settings, get_settings

CLIENT_NAMES = ("bank", "telco", "fintech", "insurer", "retailer", "utility")
#: A user retries a rejection with this probability, up to MAX_ATTEMPTS in a process.
RETRY_PROBABILITY = 0.75
MAX_ATTEMPTS = 4
#: After a rejection the next capture is good this often (the user followed the advice).
IMPROVES = 0.6


@dataclass
class Budget:
    """Transactions left to send, shared by the worker threads."""

    left: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self) -> bool:
        with self.lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    kinds: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, kind: str, outcome: str) -> None:
        with self.lock:
            self.kinds[kind] += 1
            self.outcomes[outcome] += 1


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _first_kind(rng: random.Random) -> str:
    return rng.choices([k.name for k in KINDS], weights=[k.weight for k in KINDS])[0]


def _next_kind(rng: random.Random) -> str:
    if rng.random() < IMPROVES:
        return "good"
    return rng.choice([k.name for k in KINDS if k.name != "good"])


def _submit(
    url: str, key: str, pair: tuple[bytes, bytes], user: str, process: str
) -> dict[str, Any]:
    from client.client import FaceValClient

    with FaceValClient(url, key) as api:
        result = api.submit(pair[0], pair[1], user_id=user, process_guid=process, wait=30)
        deadline = time.monotonic() + 120
        while result.get("status") != "completed" and time.monotonic() < deadline:
            result = api.get(result["transaction_id"], wait=10)
    return result


def _user(
    index: int,
    seed: int,
    url: str,
    keys: list[str],
    bank: dict[str, list[tuple[bytes, bytes]]],
    budget: Budget,
    tally: Tally,
) -> None:
    """One end user's process: attempts until accepted, out of patience, or out of budget."""
    rng = random.Random(seed * 100_003 + index)
    key = rng.choice(keys)
    user_id = f"{rng.randrange(10_000_000, 99_999_999)}"
    process = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    kind = _first_kind(rng)
    for attempt in range(1, MAX_ATTEMPTS + 1):
        if not budget.take():
            return
        pair = rng.choice(bank[kind])
        try:
            result = _submit(url, key, pair, user_id, process)
        except Exception as exc:
            with tally.lock:
                tally.failures.append(f"{kind}: {type(exc).__name__}: {exc}")
            return
        outcome = str(result.get("summary_reason") or result.get("status"))
        tally.add(kind, outcome)
        if outcome == "accepted" or attempt == MAX_ATTEMPTS:
            return
        if rng.random() > RETRY_PROBABILITY:
            return  # gives up
        time.sleep(rng.uniform(0.2, 1.5))  # reads the advice, takes another selfie
        kind = _next_kind(rng)


def _create_clients(settings: Settings, count: int, seed: int) -> list[str]:
    from tools.stack import create_client

    suffix = uuid.uuid4().hex[:6]
    keys = []
    for i in range(count):
        name = f"sim-{CLIENT_NAMES[i % len(CLIENT_NAMES)]}-{i}-{suffix}"
        _, key = asyncio.run(create_client(settings, name))
        keys.append(key)
    return keys


def drive(settings: Settings, url: str, args: argparse.Namespace) -> Tally:
    keys = _create_clients(settings, max(1, args.clients), args.seed)
    print(f"Preparing images ({', '.join(k.name for k in KINDS)})...", flush=True)
    bank = jpeg_bank()
    budget, tally = Budget(args.transactions), Tally()
    print(
        f"Submitting {args.transactions} transactions from {len(keys)} clients to {url} "
        f"({args.concurrency} at a time)...",
        flush=True,
    )
    with ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:
        index = 0
        pending = []
        while budget.left > 0 and not tally.failures:
            pending.append(pool.submit(_user, index, args.seed, url, keys, bank, budget, tally))
            index += 1
            # Keep a bounded number of users in flight: each runs its attempts in order.
            while len([p for p in pending if not p.done()]) >= max(1, args.concurrency):
                time.sleep(0.05)
        for p in pending:
            p.result()
    return tally


def write_synthetic(settings: Settings, count: int, seed: int) -> int:
    from etl.synthetic import synthetic_documents
    from shared.storage import Store

    async def insert() -> int:
        store = Store(settings.mongo_url, settings.mongo_db)
        try:
            written = 0
            docs = synthetic_documents(count, seed)
            for start in range(0, len(docs), 5000):
                written += await store.insert_transactions(docs[start : start + 5000])
            return written
        finally:
            store.close()

    written = asyncio.run(insert())
    print(
        f"{written} synthetic documents written (synthetic: true, api_hash 'synthetic'); "
        "`faceval etl run --include-synthetic` reads them"
    )
    return 0


def main(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.synthetic:
        return write_synthetic(settings, args.synthetic, args.seed)
    from tools.stack import StackError, free_port, port_open, start_stack

    url = args.url or f"http://{settings.host}:{settings.port}"
    stack = None
    if not _answers(url):
        if args.url:
            print(f"faceval simulate: no gateway answers at {url}", file=sys.stderr)
            return 2
        port = settings.port if not port_open("127.0.0.1", settings.port) else free_port()
        print(
            f"No gateway at {url}; starting the stack (logs in {settings.state_dir}/logs)...",
            flush=True,
        )
        try:
            stack = start_stack(port)
        except StackError as exc:
            print(f"faceval simulate: {exc}", file=sys.stderr)
            return 1
        url = stack.url
    started = time.monotonic()
    try:
        tally = drive(settings, url, args)
    finally:
        if stack is not None:
            stack.stop()
    sent = sum(tally.outcomes.values())
    print(f"\n{sent} transactions in {time.monotonic() - started:.0f} s")
    print("  by capture: " + ", ".join(f"{k} {n}" for k, n in sorted(tally.kinds.items())))
    print("  outcomes:   " + ", ".join(f"{k} {n}" for k, n in sorted(tally.outcomes.items())))
    for failure in tally.failures:
        print(f"  failed: {failure}", file=sys.stderr)
    print("Next: `faceval etl run --out DIR` turns them into the three reports.")
    return 1 if tally.failures else 0
