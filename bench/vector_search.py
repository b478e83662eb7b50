"""1:N template search: latency, recall and memory of the embedded index, and the time
from enrolment to searchable.

    python -m bench.vector_search [--n 1000000] [--queries 1000] [--ef 64,128,256]
    python -m bench.vector_search --n 100000 --engine qdrant      # Qdrant local mode
    python -m bench.vector_search --enrol-only                    # enrol-to-searchable only

Templates are synthetic but shaped like dlib's (128-d unit vectors in a cone: different
people score about 0.79 cosine, as dlib's impostors do, with spread in 64 latent
directions); each query is a stored template plus noise (a genuine probe, about 0.97).
Recall@1 is against exact search over the same vectors. Everything goes through
`shared.vectors` (the production code path): one client's gallery, bulk-loaded as a
fresh gateway loads it. Memory is the process RSS added by the index.

Enrol-to-searchable writes subjects through `shared.storage.Store` (the embedded
MongoDB-wire server is started on a free port unless --mongo-url is given) and times,
on a second index (another gateway replica), the sync + search that first finds each.
Numbers from a busy machine are not latencies: run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import numpy as np
import psutil  # type: ignore[import-untyped]

from shared import vectors
from shared.vectors import Change, EmbeddedIndex, QdrantIndex, VectorIndex

SPACE = "bench/synthetic"
DIM = 128


#: The shape of real dlib templates, measured on LFW fold 0 (998 photos, 601 people,
#: template5 + mirror): different people score 0.84 cosine on average, images of one person
#: 0.957; the variance spreads over about 30 directions (participation ratio 29.7, 47 for
#: 90 %). A power-law spectrum i^-ALPHA reproduces that spread.
ALPHA = 0.85
SPREAD = 0.19  # total variance around the mean direction: mean impostor cosine ~0.84
PROBE_NOISE = 0.30  # another photo of the same person: cosine ~0.96 to the enrolled one


def _shape(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mean = rng.standard_normal(DIM)
    basis = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0]
    scale = np.arange(1, DIM + 1, dtype=np.float64) ** (-ALPHA / 2)
    scale *= np.sqrt(SPREAD / float(np.sum(scale**2)))
    return (mean / np.linalg.norm(mean)).astype(np.float32), basis.astype(np.float32), scale


def _draw(rng: np.random.Generator, m: int, amount: float = 1.0) -> np.ndarray:
    _, basis, scale = _shape()
    z = rng.standard_normal((m, DIM)) * scale * amount
    return np.asarray(z.astype(np.float32) @ basis.T)


def templates(n: int, seed: int = 0, chunk: int = 100_000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mean = _shape()[0]
    out = np.empty((n, DIM), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        block = mean[None, :] + _draw(rng, m)
        out[start : start + m] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def probes(gallery: np.ndarray, count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(gallery), count, replace=False)
    q = gallery[chosen] + _draw(rng, count, PROBE_NOISE / np.sqrt(SPREAD))
    return q / np.linalg.norm(q, axis=1, keepdims=True), chosen


def exact_top1(gallery: np.ndarray, queries: np.ndarray, chunk: int = 200_000) -> np.ndarray:
    best = np.full(len(queries), -2.0, dtype=np.float32)
    where = np.zeros(len(queries), dtype=np.int64)
    for start in range(0, len(gallery), chunk):
        scores = queries @ gallery[start : start + chunk].T
        top = scores.argmax(axis=1)
        value = scores[np.arange(len(queries)), top]
        better = value > best
        best[better], where[better] = value[better], top[better] + start
    return where


def rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 2**20


def index_bench(args: argparse.Namespace) -> None:
    print(f"generating {args.n:,} templates ...", flush=True)
    gallery = templates(args.n)
    queries, own = probes(gallery, args.queries)
    cone = float(np.mean(gallery[:500] @ gallery[500:1000].T))
    genuine = float(np.mean(np.sum(queries * gallery[own], axis=1)))
    print(f"mean cosine: different templates {cone:.3f}, probe to its own {genuine:.3f}")
    started = time.perf_counter()
    truth = exact_top1(gallery, queries)
    exact_ms = (time.perf_counter() - started) / len(queries) * 1e3
    print(f"exact search (numpy, batched): {exact_ms:.2f} ms a query; "
          f"top-1 is the probe's own template for {np.mean(truth == own):.3f}")  # fmt: skip

    before = rss_mb()
    index: VectorIndex = EmbeddedIndex() if args.engine == "embedded" else QdrantIndex.connect()
    started = time.perf_counter()
    batch = 50_000
    for start in range(0, args.n, batch):
        changes = [
            Change(i + 1, "bench", f"s{i}", f"e{i}", SPACE, gallery[i])
            for i in range(start, min(args.n, start + batch))
        ]
        index._load(changes)  # type: ignore[attr-defined]  # the bulk path a fresh load takes
    build_s = time.perf_counter() - started
    added = rss_mb() - before
    print(f"{args.engine}: loaded in {build_s:.1f} s; +{added:.0f} MB RSS "
          f"= {added / args.n * 1e6 / 1024:.2f} GB per million templates "
          f"(vectors alone: {args.n * DIM * 4 / 2**20:.0f} MB)")  # fmt: skip
    ids = np.array([f"s{i}" for i in truth])
    for ef in [int(v) for v in args.ef.split(",")]:
        vectors.HNSW_EF_SEARCH = ef
        times, hits = [], 0
        for i, q in enumerate(queries):
            t = time.perf_counter()
            found = index.search("bench", q, 1, -1.0, SPACE)
            times.append(time.perf_counter() - t)
            hits += bool(found) and found[0].subject_id == ids[i]
        times.sort()
        p50, p95 = times[len(times) // 2] * 1e3, times[int(len(times) * 0.95)] * 1e3
        label = f"ef={ef}" if args.engine == "embedded" else "qdrant"
        print(f"{label}: search p50 {p50:.3f} ms, p95 {p95:.3f} ms, "
              f"recall@1 vs exact {hits / len(queries):.4f}", flush=True)  # fmt: skip
        if args.engine != "embedded":
            break
    index.close()


async def enrol_bench(mongo_url: str, rounds: int) -> None:
    from shared.storage import Store

    store = Store(mongo_url, f"bench_vectors_{uuid.uuid4().hex[:6]}")
    await store.ensure_indexes(0)
    replica: VectorIndex = EmbeddedIndex()
    await replica.sync_from(store)
    waits = []
    for i in range(rounds):
        vector = templates(1, seed=1000 + i)[0]
        fields = {"template": {"model": "bench", "version": "synthetic",
                               "vector": vector.tolist()}, "images_used": 1}  # fmt: skip
        started = time.perf_counter()
        doc, _ = await store.put_subject("bench", f"e{i}", uuid.uuid4().hex, fields)
        written = time.perf_counter()
        while True:
            await replica.sync_from(store)
            found = replica.search("bench", vector, 1, 0.999, SPACE)
            if found and found[0].subject_id == doc["_id"]:
                break
        waits.append((time.perf_counter() - started, time.perf_counter() - written))
    total = statistics.median(w[0] for w in waits) * 1e3
    after = statistics.median(w[1] for w in waits) * 1e3
    print(f"enrol-to-searchable on another replica: median {total:.1f} ms "
          f"(MongoDB write {total - after:.1f} ms, then sync + search {after:.1f} ms), "
          f"max {max(w[0] for w in waits) * 1e3:.1f} ms over {rounds} enrolments")  # fmt: skip
    store.close()


def with_mongo(url: str | None, rounds: int) -> None:
    if url:
        asyncio.run(enrol_bench(url, rounds))
        return
    from tools.stack import free_port, wait_for_port

    program = shutil.which("secantusd-py") or os.path.join(
        os.path.dirname(sys.executable), "secantusd-py"
    )
    port = free_port()
    with tempfile.TemporaryDirectory() as storage:
        server = subprocess.Popen(
            [program, "--host", "127.0.0.1", "--port", str(port), "--storage-path", storage],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            if not wait_for_port("127.0.0.1", port, 60):
                raise SystemExit("the embedded MongoDB-wire server did not start")
            asyncio.run(enrol_bench(f"mongodb://127.0.0.1:{port}/?retryWrites=false", rounds))
        finally:
            server.terminate()
            server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--ef", default="64,128,256", help="HNSW search breadths to try")
    parser.add_argument("--engine", choices=["embedded", "qdrant"], default="embedded")
    parser.add_argument("--mongo-url", help="for enrol-to-searchable (default: start one)")
    parser.add_argument("--enrol-rounds", type=int, default=50)
    parser.add_argument("--enrol-only", action="store_true")
    args = parser.parse_args()
    if not args.enrol_only:
        index_bench(args)
    with_mongo(args.mongo_url, args.enrol_rounds)


if __name__ == "__main__":
    main()
