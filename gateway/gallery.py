"""The gateway's view of the subjects' template index: one per process, kept up to date
with MongoDB before every search (shared/vectors.py), and timed."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from starlette.concurrency import run_in_threadpool

from gateway.deps import Deps
from shared import metrics
from shared.vectors import Match, Vector, VectorIndex, make_index

T = TypeVar("T")


def index_of(d: Deps) -> VectorIndex:
    """The app's index, built on first use: an app that never searches never loads it."""
    if d.index is None:
        d.index = make_index(d.settings)
    return d.index


async def _call(d: Deps, work: Callable[[], T]) -> T:
    # The embedded index answers in well under a millisecond: called in the event loop.
    # Qdrant's client blocks on the network: off the loop.
    if d.settings.vector_engine == "qdrant":
        return await run_in_threadpool(work)
    return work()


async def search(
    d: Deps, client_id: str, vector: Vector, space: str, k: int, floor: float
) -> list[Match]:
    """The client's most similar subjects in the probe's template space, best first."""
    started = time.perf_counter()
    index = index_of(d)
    await index.sync_from(d.store)
    matches = await _call(d, lambda: index.search(client_id, vector, k, floor, space))
    metrics.IDENTITY_SEARCH_SECONDS.labels(engine=d.settings.vector_engine).observe(
        time.perf_counter() - started
    )
    size = await _call(d, lambda: index.size(client_id))
    metrics.GALLERY_SUBJECTS.labels(client=client_id).set(size)
    return matches


async def enrolled(
    d: Deps, client_id: str, subject_id: str, external_id: str, vector: Vector, space: str
) -> None:
    """This replica's index learns of a write at once (others from the change log)."""
    index = index_of(d)

    def write() -> int:
        index.upsert(client_id, subject_id, external_id, vector, space)
        return index.size(client_id)

    metrics.GALLERY_SUBJECTS.labels(client=client_id).set(await _call(d, write))


async def erased(d: Deps, client_id: str, subject_id: str) -> None:
    index = index_of(d)

    def erase() -> int:
        index.delete(client_id, subject_id)
        return index.size(client_id)

    metrics.GALLERY_SUBJECTS.labels(client=client_id).set(await _call(d, erase))
