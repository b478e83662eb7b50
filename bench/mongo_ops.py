"""The embedded MongoDB-wire server's cost per operation, and what makes it grow.

FaceVal's stack, tests and benchmarks run on secantusdb (a MongoDB-wire server written in
Python) when no MongoDB is configured. Its cost per operation is not flat: this measures
the operations the stage runtime issues against a collection of transaction-shaped
documents of growing size (findAndModify scans the collection), and an update with and
without retryable writes (pymongo's default) after many writes (the server keeps a record
of each retryable write for 30 minutes, up to 10,000, and walks them all on every write:
sorting them once at the cap). Each case on a fresh server.

    python -m bench.mongo_ops [--sizes 100 1000 3000] [--ops 40] [--writes 11000]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pymongo import MongoClient, ReturnDocument

from bench.stats import format_table, machine, write_json
from tools.stack import free_port, wait_for_port


def _doc(index: int) -> dict[str, Any]:
    record = {"verdict": "pass", "reasons": [], "scores": {"m": {"values": {"x": 1.0}}},
              "time_ms": 1.0, "queue_time_ms": 1.0}  # fmt: skip
    return {"_id": f"t{index:08d}", "status": "pending", "client_id": "bench",
            "stages": {"face_detector": {"near": record, "far": record}}}  # fmt: skip


class Server:
    """A throw-away secantusdb on a free port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="faceval-bench-mongo-")
        program = Path(sys.executable).parent / "secantusd-py"
        self.proc = subprocess.Popen(
            [str(program), "--host", "127.0.0.1", "--port", str(self.port),
             "--storage-path", self.dir.name],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if not wait_for_port("127.0.0.1", self.port, 60):
            self.close()
            raise RuntimeError("secantusdb did not start")

    def client(self, options: str = "") -> MongoClient[dict[str, Any]]:
        return MongoClient(f"mongodb://127.0.0.1:{self.port}/?{options}")

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.dir.cleanup()


def timed(ops: int, action: Callable[[int], object]) -> float:
    """Median milliseconds of `ops` calls."""
    times = []
    for i in range(ops):
        started = time.perf_counter()
        action(i)
        times.append((time.perf_counter() - started) * 1e3)
    return round(sorted(times)[len(times) // 2], 3)


def by_collection_size(sizes: Sequence[int], ops: int) -> dict[str, dict[str, float]]:
    server = Server()
    try:
        col = server.client("retryWrites=false").bench.transactions
        out: dict[str, dict[str, float]] = {}
        have = 0
        for size in sizes:
            col.insert_many([_doc(i) for i in range(have, size)])
            have = size

            def path(i: int, size: int = size) -> str:
                return f"stages.quality.near{size}_{i}"

            out[str(size)] = {
                "find_one by _id": timed(ops, lambda i: col.find_one({"_id": _doc(i)["_id"]})),
                "update_one conditional": timed(ops, lambda i: col.update_one(
                    {"_id": _doc(i)["_id"], "status": "pending", path(i): {"$exists": False}},
                    {"$set": {path(i): 1}})),
                "find_one_and_update conditional": timed(ops, lambda i: col.find_one_and_update(
                    {"_id": _doc(i)["_id"], "status": "pending", f"{path(i)}b": {"$exists": False}},
                    {"$set": {f"{path(i)}b": 1}}, return_document=ReturnDocument.AFTER)),
            }  # fmt: skip
            print(f"  {size:>6} documents: {out[str(size)]}", flush=True)
        return out
    finally:
        server.close()


def by_retryable_writes(writes: int, ops: int) -> dict[str, float]:
    out = {}
    for options in ("", "retryWrites=false"):
        server = Server()
        try:
            col = server.client(options).bench.transactions
            col.insert_one(_doc(0))
            for i in range(writes):  # what a long benchmark or a day of `faceval up` leaves
                col.update_one({"_id": _doc(0)["_id"]}, {"$set": {"n": i}})
            name = f"update_one after {writes} writes, {options or 'retryable writes (default)'}"

            def write(i: int, col: Any = col) -> object:
                return col.update_one({"_id": _doc(0)["_id"]}, {"$set": {"m": i}})

            out[name] = timed(ops, write)
            print(f"  {name}: {out[name]} ms", flush=True)
        finally:
            server.close()
    return out


def run(
    sizes: Sequence[int] = (100, 1000, 3000), ops: int = 40, writes: int = 11000
) -> dict[str, Any]:
    return {
        "benchmark": "mongo_ops",
        "machine": machine(),
        "config": {"sizes": list(sizes), "ops": ops, "writes": writes, "server": "secantusdb"},
        "median_ms_by_collection_size": by_collection_size(sizes, ops),
        "median_ms_retryable_writes": by_retryable_writes(writes, ops),
    }


def print_report(report: Mapping[str, Any]) -> None:
    sizes = report["median_ms_by_collection_size"]
    ops = list(next(iter(sizes.values())))
    print(format_table(["documents", *ops], [[n, *v.values()] for n, v in sizes.items()]))
    for name, value in report["median_ms_retryable_writes"].items():
        print(f"{name}: {value} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 3000])
    parser.add_argument("--ops", type=int, default=40)
    parser.add_argument("--writes", type=int, default=11000)
    args = parser.parse_args()
    if not (all(1 <= s <= 20000 for s in args.sizes) and 5 <= args.ops <= 1000
            and 0 <= args.writes <= 20000):  # fmt: skip
        parser.error("bounded: sizes up to 20000, ops 5-1000, writes up to 20000")
    report = run(sorted(args.sizes), args.ops, args.writes)
    print_report(report)
    print(f"\nwrote {write_json('mongo_ops.json', report)}")


if __name__ == "__main__":
    main()
