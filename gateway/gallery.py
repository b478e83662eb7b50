"""The gateway's view of the subjects' template index: one per process, kept up to date
with MongoDB before every search (shared/vectors.py), and timed."""

from __future__ import annotations

import time

from gateway.deps import Deps
from shared import metrics
from shared.vectors import Match, Vector, VectorIndex, make_index

#: One index per gateway process (per app, for tests that build several): built on first
#: use, so an app that never searches never loads the gallery.
_INDEXES: dict[int, VectorIndex] = {}


def index_of(d: Deps) -> VectorIndex:
    index = _INDEXES.get(id(d))
    if index is None:
        index = _INDEXES[id(d)] = make_index(d.settings)
    return index


async def search(
    d: Deps, client_id: str, vector: Vector, space: str, k: int, floor: float
) -> list[Match]:
    """The client's most similar subjects in the probe's template space, best first."""
    started = time.perf_counter()
    index = index_of(d)
    await index.sync_from(d.store)
    matches = index.search(client_id, vector, k, floor, space)
    metrics.IDENTITY_SEARCH_SECONDS.labels(engine=d.settings.vector_engine).observe(
        time.perf_counter() - started
    )
    metrics.GALLERY_SUBJECTS.labels(client=client_id).set(index.size(client_id))
    return matches


def enrolled(d: Deps, client_id: str, subject_id: str, external_id: str, vector: Vector,
             space: str) -> None:  # fmt: skip
    """This replica's index learns of a write at once (others from the change log)."""
    index = index_of(d)
    index.upsert(client_id, subject_id, external_id, vector, space)
    metrics.GALLERY_SUBJECTS.labels(client=client_id).set(index.size(client_id))


def erased(d: Deps, client_id: str, subject_id: str) -> None:
    index = index_of(d)
    index.delete(client_id, subject_id)
    metrics.GALLERY_SUBJECTS.labels(client=client_id).set(index.size(client_id))
