"""Face templates indexed for 1:N search: one interface, two engines.

MongoDB's `subjects` collection is the source of truth (shared/storage.py); an index is a
copy that follows it by sequence number. Every enrolment, replacement and erasure takes
the next `seq` from a counter; before each search an index applies what changed since
the last seq it saw (one indexed query on `seq`, usually empty), so several gateway
replicas stay consistent with no messaging, and a subject is searchable on the next
search after its enrolment (enrol-to-searchable is one MongoDB read).

- `EmbeddedIndex` (the default): an HNSW graph per client and template space in this
  process (hnswlib, inner product on unit vectors = cosine). No server; rebuilt from
  MongoDB when the process starts.
- `QdrantIndex`: a Qdrant collection per template space with a `client_id` payload
  filter, through `qdrant-client` (the same client drives a Qdrant cluster, or runs in
  process with `location=":memory:"` for tests). Written on enrolment and erasure; it
  follows MongoDB by sequence too, so a write a replica missed is repaired; `faceval
  subjects reindex` rebuilds it from MongoDB.

A template space is "model/version": templates of two spaces never compare, so each
space has its own graph (or collection), and a search only sees the probe's space.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
import uuid
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:
    from shared.settings import Settings
    from shared.storage import Doc, Store

log = logging.getLogger(__name__)

Vector = NDArray[np.float32]

#: A sequence number missing from the change log (its writer took it and has not logged
#: the change yet, or failed) holds the watermark back this long, then is skipped.
GAP_PATIENCE_SECONDS = 30.0
#: A follower that starts from the server's state (Qdrant) or from a full load re-reads
#: this many changes before it: writes in flight while it loaded are not lost.
REPLAY_CHANGES = 256


def space_of(model: str, version: str) -> str:
    return f"{model}/{version}"


def unit(vector: Sequence[float] | NDArray[Any]) -> Vector:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(norm) or norm == 0.0:
        raise ValueError("a template is the zero vector or not finite")
    return np.asarray(v / norm, dtype=np.float32)


def mean_template(vectors: Sequence[Sequence[float] | NDArray[Any]]) -> Vector:
    """One template from several images of one person: the renormalised mean of unit
    templates (each image weighs the same)."""
    if not vectors:
        raise ValueError("no templates to average")
    return unit(np.sum([unit(v) for v in vectors], axis=0))


def cosine(a: Sequence[float] | NDArray[Any], b: Sequence[float] | NDArray[Any]) -> float:
    """The similarity the identity stage uses (shared with services/identity/matching)."""
    return float(np.clip(np.dot(unit(a), unit(b)), -1.0, 1.0))


@dataclass(frozen=True)
class Match:
    subject_id: str
    external_id: str
    similarity: float


@dataclass(frozen=True)
class Change:
    """One subject as it is now (vector set), or erased (vector None), at `seq`."""

    seq: int
    client_id: str
    subject_id: str
    external_id: str = ""
    space: str = ""
    vector: Vector | None = None

    @property
    def erased(self) -> bool:
        return self.vector is None

    @classmethod
    def from_subject(cls, doc: Mapping[str, Any]) -> Change:
        template = doc["template"]
        return cls(
            seq=int(doc["seq"]),
            client_id=str(doc["client_id"]),
            subject_id=str(doc["_id"]),
            external_id=str(doc["external_id"]),
            space=space_of(str(template["model"]), str(template["version"])),
            vector=unit(template["vector"]),
        )


class VectorIndex(Protocol):
    """What the gateway needs from a template index, whatever the engine."""

    def upsert(
        self, client_id: str, subject_id: str, external_id: str, vector: Vector, space: str
    ) -> None: ...

    def delete(self, client_id: str, subject_id: str) -> None: ...

    def search(
        self, client_id: str, vector: Vector, k: int, floor: float, space: str
    ) -> list[Match]:
        """The client's k most similar subjects in `space` at or above `floor`, best first."""
        ...

    def size(self, client_id: str) -> int:
        """Subjects of this client in the index (all spaces)."""
        ...

    async def sync_from(self, store: Store) -> int:
        """Apply the subjects changed in MongoDB since the last call; how many changes."""
        ...

    async def rebuild(self, store: Store) -> int:
        """Forget everything and load every subject from MongoDB; how many subjects."""
        ...

    def close(self) -> None: ...


@dataclass
class SeqFollower:
    """Which changes an index has applied, as a watermark on the change log's `seq`.

    Each enrolment, replacement or erasure takes the next number from a counter, writes
    the subject, then logs `{seq, client_id, subject_id}`; so two writers can log out of
    order (8 visible before 7). The watermark only moves over a contiguous run; a missing
    number holds it for `patience` seconds and is then skipped (its writer failed). Log
    rows above the watermark are re-read on each sync and applied once per subject (the
    subject as it is now, read by id), so nothing is lost and nothing is applied twice.
    """

    patience: float = GAP_PATIENCE_SECONDS
    watermark: int = 0
    #: subject id -> the last seq applied for it (only those above the watermark).
    applied: dict[str, int] = field(default_factory=dict)
    _gap_since: dict[int, float] = field(default_factory=dict)

    async def changes(self, store: Store) -> list[Change]:
        rows = await store.subject_changes(self.watermark)
        if not rows:
            return []
        latest: dict[tuple[str, str], int] = {}
        for row in rows:
            key = (str(row["client_id"]), str(row["subject_id"]))
            latest[key] = max(latest.get(key, 0), int(row["_id"]))
        todo = {k: seq for k, seq in latest.items() if seq > self.applied.get(k[1], 0)}
        found: dict[str, Doc] = {}
        if todo:
            docs = await store.subjects_by_ids([subject for _, subject in todo])
            found = {str(d["_id"]): d for d in docs}
        changes: list[Change] = []
        for (client_id, subject_id), seq in todo.items():
            doc = found.get(subject_id)
            if doc is not None and doc["client_id"] == client_id:
                change = Change.from_subject(doc)
            else:
                change = Change(seq, client_id, subject_id)  # erased since
            self.applied[subject_id] = max(seq, change.seq)
            changes.append(change)
        self._advance({int(r["_id"]) for r in rows})
        return changes

    def _advance(self, seen: set[int]) -> None:
        top, now = max(seen), time.monotonic()
        while self.watermark < top:
            following = self.watermark + 1
            if following not in seen:
                since = self._gap_since.setdefault(following, now)
                if now - since < self.patience:
                    break
            self._gap_since.pop(following, None)
            self.watermark = following
        self.applied = {s: q for s, q in self.applied.items() if q > self.watermark}

    def start_at(self, seq: int) -> None:
        self.watermark = max(0, seq)
        self.applied.clear()
        self._gap_since.clear()


class _Synced:
    """The change-following half both engines share."""

    def __init__(self) -> None:
        self.follower = SeqFollower()
        self._sync_lock = asyncio.Lock()
        self._started = False

    def _apply(self, change: Change) -> None:
        if change.vector is None:
            self.delete(change.client_id, change.subject_id)
        else:
            self.upsert(
                change.client_id, change.subject_id, change.external_id, change.vector,
                change.space,
            )  # fmt: skip

    def upsert(
        self, client_id: str, subject_id: str, external_id: str, vector: Vector, space: str
    ) -> None:
        raise NotImplementedError

    def delete(self, client_id: str, subject_id: str) -> None:
        raise NotImplementedError

    def _clear(self) -> None:
        raise NotImplementedError

    def _load(self, changes: Sequence[Change]) -> None:
        for change in changes:
            self._apply(change)

    async def _start(self, store: Store) -> None:
        """What a fresh process does before its first sync: load everything."""
        await self._rebuild(store)

    async def sync_from(self, store: Store) -> int:
        async with self._sync_lock:
            if not self._started:
                await self._start(store)
                self._started = True
            changes = await self.follower.changes(store)
            for change in changes:
                self._apply(change)
            return len(changes)

    async def rebuild(self, store: Store) -> int:
        async with self._sync_lock:
            count = await self._rebuild(store)
            self._started = True
            return count

    async def _rebuild(self, store: Store) -> int:
        self._clear()
        # Taken before the scan: whatever changes during it is replayed after.
        self.follower.start_at(await store.last_subject_seq() - REPLAY_CHANGES)
        batch: list[Change] = []
        count = 0
        async for doc in store.all_subjects():
            batch.append(Change.from_subject(doc))
            if len(batch) >= 10_000:
                self._load(batch)
                count, batch = count + len(batch), []
        self._load(batch)
        return count + len(batch)


# --- embedded: HNSW in this process ----------------------------------------------------------


#: HNSW parameters from bench/vector_search.py on 1M dlib-shaped templates (2 busy cores):
#: search breadth 512 gives recall@1 0.992 against exact search at p50 2.7 ms (256: 0.968 at
#: 1.5 ms; 768: 0.996 at 3.7 ms). Degree 48 (M=16 reached only 0.88 at 200k).
HNSW_M = 48
HNSW_EF_CONSTRUCTION = 300
HNSW_EF_SEARCH = 512
#: Below this many subjects a client's space is searched exactly (numpy): faster than a
#: graph, and exact.
EXACT_BELOW = 2_000


class _Graph:
    """One client's templates of one space: a dense matrix searched exactly while small,
    an HNSW graph (hnswlib, which keeps the vectors itself) from `EXACT_BELOW` on."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.labels: dict[str, int] = {}
        self.subjects: dict[int, tuple[str, str]] = {}
        self._free: list[int] = []
        self._next = 0
        self._hnsw: Any = None
        self._exact: dict[int, Vector] = {}
        self._matrix: tuple[NDArray[np.float32], list[int]] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def _label(self, subject_id: str) -> int:
        label = self.labels.get(subject_id)
        if label is None:
            label, self._next = self._next, self._next + 1
            self.labels[subject_id] = label
        return label

    def upsert(self, subject_id: str, external_id: str, vector: Vector) -> None:
        self.load([(subject_id, external_id)], vector[None, :])

    def load(self, subjects: Sequence[tuple[str, str]], vectors: NDArray[np.float32]) -> None:
        if vectors.shape != (len(subjects), self.dim):
            raise ValueError(
                f"expected {len(subjects)} {self.dim}-d templates, got {vectors.shape}"
            )
        labels = np.empty(len(subjects), dtype=np.int64)
        for i, (subject_id, external_id) in enumerate(subjects):
            labels[i] = self._label(subject_id)
            self.subjects[int(labels[i])] = (subject_id, external_id)
        self._matrix = None
        if self._hnsw is None:
            self._exact.update(zip(labels.tolist(), vectors, strict=True))
            if len(self._exact) >= EXACT_BELOW:
                self._build_hnsw()
            return
        needed = self._hnsw.get_current_count() + len(labels)
        if needed > self._hnsw.get_max_elements():
            self._hnsw.resize_index(max(needed, 2 * self._hnsw.get_max_elements()))
        # A label seen before (a replaced template) is updated in place; a new one may
        # take the slot of an erased subject.
        self._hnsw.add_items(vectors, labels, replace_deleted=True)

    def delete(self, subject_id: str) -> bool:
        label = self.labels.pop(subject_id, None)
        if label is None:
            return False
        del self.subjects[label]
        self._matrix = None
        if self._hnsw is not None:
            self._hnsw.mark_deleted(label)
        else:
            del self._exact[label]
        return True

    def _build_hnsw(self) -> None:
        import hnswlib  # type: ignore[import-untyped]

        index = hnswlib.Index(space="ip", dim=self.dim)
        index.init_index(
            max_elements=max(2 * len(self._exact), 4 * EXACT_BELOW), M=HNSW_M,
            ef_construction=HNSW_EF_CONSTRUCTION, allow_replace_deleted=True,
        )  # fmt: skip
        index.set_ef(HNSW_EF_SEARCH)
        labels = np.fromiter(self._exact, dtype=np.int64, count=len(self._exact))
        index.add_items(np.stack(list(self._exact.values())), labels)
        self._hnsw, self._exact = index, {}

    def search(self, vector: Vector, k: int) -> list[tuple[int, float]]:
        k = min(k, len(self.labels))
        if k <= 0:
            return []
        if self._hnsw is not None:
            self._hnsw.set_ef(max(HNSW_EF_SEARCH, k))
            labels, distances = self._hnsw.knn_query(vector[None, :], k=k, num_threads=1)
            # hnswlib's "ip" distance is 1 - inner product.
            return [(int(x), 1.0 - float(d)) for x, d in zip(labels[0], distances[0], strict=True)]
        if self._matrix is None:
            keys = list(self._exact)
            self._matrix = (np.stack([self._exact[key] for key in keys]), keys)
        matrix, keys = self._matrix
        scores = matrix @ vector
        top = np.argpartition(-scores, k - 1)[:k] if k < len(keys) else np.arange(len(keys))
        return [(keys[int(i)], float(scores[int(i)])) for i in top]


class EmbeddedIndex(_Synced):
    """Per client and template space, exact while small and HNSW beyond `EXACT_BELOW`."""

    def __init__(self) -> None:
        super().__init__()
        self._graphs: dict[tuple[str, str], _Graph] = {}
        self._where: dict[tuple[str, str], str] = {}  # (client, subject) -> space
        self._lock = threading.Lock()

    def upsert(
        self, client_id: str, subject_id: str, external_id: str, vector: Vector, space: str
    ) -> None:
        vector = unit(vector)
        with self._lock:
            before = self._where.get((client_id, subject_id))
            if before is not None and before != space:
                self._graphs[(client_id, before)].delete(subject_id)
            graph = self._graphs.get((client_id, space))
            if graph is None:
                graph = self._graphs[(client_id, space)] = _Graph(len(vector))
            graph.upsert(subject_id, external_id, vector)
            self._where[(client_id, subject_id)] = space

    def delete(self, client_id: str, subject_id: str) -> None:
        with self._lock:
            space = self._where.pop((client_id, subject_id), None)
            if space is not None:
                self._graphs[(client_id, space)].delete(subject_id)

    def search(
        self, client_id: str, vector: Vector, k: int, floor: float, space: str
    ) -> list[Match]:
        with self._lock:
            graph = self._graphs.get((client_id, space))
            if graph is None:
                return []
            found = graph.search(unit(vector), k)
            matches = [
                Match(*graph.subjects[label], similarity=round(score, 6))
                for label, score in found
                if score >= floor and label in graph.subjects
            ]
        matches.sort(key=lambda m: m.similarity, reverse=True)
        return matches

    def size(self, client_id: str) -> int:
        with self._lock:
            return sum(len(g) for (client, _), g in self._graphs.items() if client == client_id)

    def _clear(self) -> None:
        with self._lock:
            self._graphs.clear()
            self._where.clear()

    def _load(self, changes: Sequence[Change]) -> None:
        """A full load, in bulk per client and space (what a fresh process does)."""
        groups: dict[tuple[str, str], list[Change]] = {}
        for change in changes:
            if change.vector is None:
                self.delete(change.client_id, change.subject_id)
            else:
                self.delete(change.client_id, change.subject_id)
                groups.setdefault((change.client_id, change.space), []).append(change)
        with self._lock:
            for (client_id, space), group in groups.items():
                graph = self._graphs.get((client_id, space))
                vectors = np.stack([c.vector for c in group if c.vector is not None])
                if graph is None:
                    graph = self._graphs[(client_id, space)] = _Graph(vectors.shape[1])
                graph.load([(c.subject_id, c.external_id) for c in group], vectors)
                for c in group:
                    self._where[(client_id, c.subject_id)] = space

    def close(self) -> None:
        self._clear()


# --- distributed: Qdrant -----------------------------------------------------------------------


def _point_id(client_id: str, subject_id: str) -> str:
    # A subject id is a UUID, but a point id must not let one client's write land on
    # another's point: derive it from both.
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"faceval:{client_id}:{subject_id}"))


class QdrantIndex(_Synced):
    """Qdrant: a collection per template space (cosine), `client_id` in every point's
    payload and in every search filter; points are named by (client, subject)."""

    def __init__(self, client: Any, prefix: str = "faceval_subjects") -> None:
        super().__init__()
        self._client = client
        self._prefix = prefix
        self._collections: dict[str, str] = {}

    @classmethod
    def connect(
        cls, url: str | None = None, api_key: str | None = None, **options: Any
    ) -> QdrantIndex:
        from qdrant_client import QdrantClient

        if url is None or url == ":memory:":
            return cls(QdrantClient(location=":memory:"), **options)
        return cls(QdrantClient(url=url, api_key=api_key), **options)

    def _collection(self, space: str, dim: int | None = None) -> str | None:
        from qdrant_client import models

        name = self._collections.get(space)
        if name is not None:
            return name
        name = f"{self._prefix}_{hashlib.sha256(space.encode()).hexdigest()[:16]}"
        if not self._client.collection_exists(name):
            if dim is None:
                return None
            self._client.create_collection(
                name, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE)
            )
            # Tenancy: every query filters on the client; the index keeps that cheap on a
            # server (local mode warns that it has no payload indexes: nothing to act on).
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                self._client.create_payload_index(
                    name, "client_id", field_schema=models.PayloadSchemaType.KEYWORD
                )
        self._collections[space] = name
        return name

    def _names(self) -> list[str]:
        listed = self._client.get_collections().collections
        return [c.name for c in listed if c.name.startswith(self._prefix + "_")]

    @staticmethod
    def _tenant(client_id: str, subject_id: str | None = None) -> Any:
        from qdrant_client import models

        must = [models.FieldCondition(key="client_id", match=models.MatchValue(value=client_id))]
        if subject_id is not None:
            must.append(
                models.FieldCondition(key="subject_id", match=models.MatchValue(value=subject_id))
            )
        return models.Filter(must=must)

    def upsert(
        self, client_id: str, subject_id: str, external_id: str, vector: Vector, space: str
    ) -> None:
        from qdrant_client import models

        vector = unit(vector)
        # A replaced template may have moved space: remove it from the others.
        self.delete(client_id, subject_id, keep=space)
        name = self._collection(space, len(vector))
        assert name is not None
        payload = {"client_id": client_id, "subject_id": subject_id,
                   "external_id": external_id, "space": space}  # fmt: skip
        point = models.PointStruct(
            id=_point_id(client_id, subject_id), vector=vector.tolist(), payload=payload
        )
        self._client.upsert(name, points=[point], wait=True)

    def delete(self, client_id: str, subject_id: str, keep: str | None = None) -> None:
        from qdrant_client import models

        kept = self._collections.get(keep) if keep else None
        selector = models.FilterSelector(filter=self._tenant(client_id, subject_id))
        for name in self._names():
            if name != kept:
                self._client.delete(name, points_selector=selector, wait=True)

    def search(
        self, client_id: str, vector: Vector, k: int, floor: float, space: str
    ) -> list[Match]:
        name = self._collection(space)
        if name is None or k <= 0:
            return []
        found = self._client.query_points(
            name, query=unit(vector).tolist(), query_filter=self._tenant(client_id), limit=k,
            score_threshold=floor, with_payload=True,
        ).points  # fmt: skip
        matches = [
            Match(str(p.payload["subject_id"]), str(p.payload["external_id"]),
                  round(float(p.score), 6))
            for p in found
            if p.payload is not None and p.payload.get("client_id") == client_id
        ]  # fmt: skip
        matches.sort(key=lambda m: m.similarity, reverse=True)
        return matches

    def size(self, client_id: str) -> int:
        return sum(
            int(self._client.count(name, count_filter=self._tenant(client_id), exact=True).count)
            for name in self._names()
        )

    def _clear(self) -> None:
        for name in self._names():
            self._client.delete_collection(name)
        self._collections.clear()

    async def _start(self, store: Store) -> None:
        """The server keeps its points across restarts: follow from the log's end (minus
        a replay margin); `faceval subjects reindex` rebuilds it when in doubt."""
        self.follower.start_at(await store.last_subject_seq() - REPLAY_CHANGES)

    def _load(self, changes: Sequence[Change]) -> None:
        from qdrant_client import models

        by_space: dict[str, list[Any]] = {}
        for c in changes:
            if c.vector is None:
                self.delete(c.client_id, c.subject_id)
                continue
            payload = {"client_id": c.client_id, "subject_id": c.subject_id,
                       "external_id": c.external_id, "space": c.space}  # fmt: skip
            point = models.PointStruct(
                id=_point_id(c.client_id, c.subject_id), vector=c.vector.tolist(), payload=payload
            )
            by_space.setdefault(c.space, []).append(point)
        for space, points in by_space.items():
            name = self._collection(space, len(points[0].vector))
            assert name is not None
            self._client.upsert(name, points=points, wait=True)

    def close(self) -> None:
        self._client.close()


def make_index(settings: Settings) -> VectorIndex:
    """The index engine the settings name (`FACEVAL_VECTOR_ENGINE`)."""
    if settings.vector_engine == "qdrant":
        key = settings.qdrant_api_key
        return QdrantIndex.connect(settings.qdrant_url, key.get_secret_value() if key else None)
    return EmbeddedIndex()
