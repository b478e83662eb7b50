"""Where the pipeline's own time goes: py-spy on every worker and on the MongoDB-wire server
while a steady load of transactions runs through the stack.

    python -m bench.profile [--kind noop|real] [--seconds 12] [--env KEY=VALUE ...]

Samples only threads holding the GIL (`py-spy --gil`), i.e. Python code on a CPU, not
threads waiting on a socket or a lock (native code that releases the GIL, such as ONNX
Runtime or a BLAS call, is not seen). Writes bench/results/profile.json: per process the
share of samples by library of the innermost frame, the hottest functions, and the
collapsed stacks (for flame graph tools or speedscope).
Needs py-spy (the `dev` extra) and permission to ptrace this user's processes.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.harness import Driver, bench_env, burst
from bench.pairs import ACCEPTED, bench_pairs
from bench.stats import machine, write_json

#: Innermost-frame file prefix -> what it is, first match wins.
CATEGORIES: tuple[tuple[str, str], ...] = (
    ("secantus/", "mongodb-wire server"),
    ("pymongo/", "MongoDB client"),
    ("motor/", "MongoDB client"),
    ("bson/", "BSON encoding"),
    ("celery/", "Celery/kombu/amqp"),
    ("kombu/", "Celery/kombu/amqp"),
    ("amqp/", "Celery/kombu/amqp"),
    ("vine/", "Celery/kombu/amqp"),
    ("billiard/", "Celery/kombu/amqp"),
    ("redis/", "Redis client"),
    ("PIL/", "image decode"),
    ("asyncio/", "threads and event loop"),
    ("concurrent/", "threads and event loop"),
    ("threading.py", "threads and event loop"),
    ("queue.py", "threads and event loop"),
    ("selectors.py", "threads and event loop"),
    ("socket.py", "sockets"),
    ("ssl.py", "sockets"),
    ("prometheus_client/", "metrics"),
    ("logging/", "logging"),
    ("pydantic", "pydantic"),
    ("shared/", "FaceVal runtime"),
    ("services/", "models"),
    ("numpy/", "models"),
    ("cv2/", "models"),
    ("scipy/", "models"),
    ("onnxruntime/", "models"),
)
#: Frames every stack has: not informative as "hot".
GENERIC = ("threading.py", "runpy", "<frozen", "concurrent/futures/thread.py")


def category(frame: str) -> str:
    path = frame[frame.rfind("(") + 1 :] if "(" in frame else frame
    for prefix, name in CATEGORIES:
        if path.startswith(prefix) or f"/{prefix}" in path:
            return name
    return "other"


def summarise(collapsed: str, top: int = 15) -> dict[str, Any]:
    """Sample shares by category (innermost frame) and the hottest functions."""
    by_category: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [f.rsplit(":", 1)[0] + ")" if "(" in f else f for f in stack.split(";")]
        total += n
        by_category[category(frames[-1])] += n
        own[frames[-1]] += n
        for frame in set(frames):
            if not any(g in frame for g in GENERIC):
                inclusive[frame] += n
    share = {k: round(v / total, 3) for k, v in by_category.most_common()} if total else {}
    return {
        "samples": total,
        "share_by_category": share,
        "hottest_inclusive": [(f, round(n / total, 3)) for f, n in inclusive.most_common(top)],
        "hottest_self": [(f, round(n / total, 3)) for f, n in own.most_common(top)],
    }


def record(pids: Mapping[str, int], seconds: int, rate: int) -> dict[str, str]:
    """Collapsed stacks per process (py-spy's raw format), sampled at the same time."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    with tempfile.TemporaryDirectory(prefix="faceval-bench-profile-") as folder:
        procs = {}
        for name, pid in pids.items():
            out = Path(folder) / f"{name}.txt"
            argv = [spy, "record", "--pid", str(pid), "--duration", str(seconds),
                    "--rate", str(rate), "--format", "raw", "--gil", "--nonblocking",
                    "--output", str(out)]  # fmt: skip
            procs[name] = (subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE), out)  # fmt: skip
        collapsed = {}
        for name, (proc, out) in procs.items():
            _, err = proc.communicate(timeout=seconds + 60)
            if proc.returncode != 0 or not out.exists():
                raise RuntimeError(f"py-spy on {name} failed: "
                                   f"{err.decode(errors='replace')[-500:]}")  # fmt: skip
            collapsed[name] = out.read_text()
    return collapsed


def run(kind: str, seconds: int, rate: int, env_vars: Mapping[str, str]) -> dict[str, Any]:
    pairs = bench_pairs()
    load = [pairs[n] for n in (ACCEPTED if kind == "real" else ACCEPTED[:1])] * 10
    with bench_env("profile") as env:
        env.start_workers(kind, env=env_vars)
        if kind == "real":
            env.wait_models_loaded()
        driver = Driver(env.settings)
        stop = threading.Event()
        done = [0]

        def keep_busy() -> None:
            while not stop.is_set():
                done[0] += len(burst(driver, load).ids)

        loader = threading.Thread(target=keep_busy, name="bench-load", daemon=True)
        try:
            loader.start()
            time.sleep(2)  # into the steady state before sampling
            pids = {n.removeprefix(f"{kind}-").removesuffix("-0"): p
                    for n, p in env.worker_pids().items()}  # fmt: skip
            mongo = env.mongo_pid()
            if mongo:
                pids["mongo"] = mongo
            collapsed = record(pids, seconds, rate)
        finally:
            stop.set()
            loader.join(timeout=120)
            driver.close()
            env.stop_workers()
    return {
        "benchmark": "profile",
        "machine": machine(),
        "config": {
            "kind": kind,
            "seconds": seconds,
            "rate_hz": rate,
            "env": dict(env_vars),
            "sampling": "py-spy --gil (Python on a CPU)",
        },
        "transactions_during_run": done[0],
        "processes": {name: summarise(text) for name, text in collapsed.items()},
        # For flame graphs: jq -r '.collapsed_stacks.quality' bench/results/profile.json
        "collapsed_stacks": collapsed,
    }


def print_report(report: Mapping[str, Any]) -> None:
    for name, summary in report["processes"].items():
        shares = ", ".join(f"{k} {v:.0%}" for k, v in summary["share_by_category"].items()
                           if v >= 0.02)  # fmt: skip
        print(f"{name} ({summary['samples']} samples): {shares}")
        for frame, share in summary["hottest_inclusive"][:8]:
            print(f"    {share:6.1%}  {frame}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=["noop", "real"], default="noop")
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the workers")  # fmt: skip
    args = parser.parse_args()
    if not (2 <= args.seconds <= 120 and 10 <= args.rate <= 1000):
        parser.error("bounded: 2-120 seconds, 10-1000 samples a second")
    env_vars = dict(item.split("=", 1) for item in args.env)
    report = run(args.kind, args.seconds, args.rate, env_vars)
    print_report(report)
    print(f"\nwrote {write_json('profile.json', report)}")


if __name__ == "__main__":
    main()
