"""The template index engines: the embedded HNSW index and Qdrant in local mode, behind
one interface, following a store's change log by sequence number."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from shared import vectors
from shared.storage import Doc
from shared.vectors import EmbeddedIndex, QdrantIndex, VectorIndex, mean_template, unit

SPACE = "dlib_resnet_v1/test"


def face(seed: int, dim: int = 128) -> vectors.Vector:
    rng = np.random.default_rng(seed)
    return unit(rng.standard_normal(dim))


def near(vector: vectors.Vector, seed: int, amount: float = 0.2) -> vectors.Vector:
    rng = np.random.default_rng(seed + 10_000)
    return unit(vector + amount * unit(rng.standard_normal(len(vector))))


class FakeStore:
    """The subject reads an index makes, over dicts, with the same seq rules as
    shared/storage.py (seq taken before the write, logged after it)."""

    def __init__(self) -> None:
        self.subjects: dict[str, Doc] = {}
        self.log: dict[int, Doc] = {}
        self.seq = 0

    def take_seq(self) -> int:
        self.seq += 1
        return self.seq

    def put(self, client_id: str, subject_id: str, external_id: str, vector: Any,
            space: str = SPACE, *, seq: int | None = None, log: bool = True) -> int:  # fmt: skip
        seq = seq or self.take_seq()
        model, version = space.split("/")
        self.subjects[subject_id] = {
            "_id": subject_id, "client_id": client_id, "external_id": external_id, "seq": seq,
            "template": {"model": model, "version": version, "vector": list(map(float, vector))},
        }  # fmt: skip
        if log:
            self.write_log(seq, client_id, subject_id)
        return seq

    def write_log(self, seq: int, client_id: str, subject_id: str) -> None:
        self.log[seq] = {"_id": seq, "client_id": client_id, "subject_id": subject_id}

    def erase(self, client_id: str, subject_id: str) -> None:
        seq = self.take_seq()
        del self.subjects[subject_id]
        self.write_log(seq, client_id, subject_id)

    async def subject_changes(self, after_seq: int, limit: int = 10_000) -> list[Doc]:
        return [self.log[s] for s in sorted(self.log) if s > after_seq][:limit]

    async def subjects_by_ids(self, ids: Sequence[str]) -> list[Doc]:
        return [self.subjects[i] for i in ids if i in self.subjects]

    async def all_subjects(self) -> AsyncIterator[Doc]:
        for doc in list(self.subjects.values()):
            yield doc

    async def last_subject_seq(self) -> int:
        return self.seq


def sync(index: VectorIndex, store: FakeStore) -> int:
    return asyncio.run(index.sync_from(store))  # type: ignore[arg-type]


ENGINES: dict[str, Callable[[], VectorIndex]] = {
    "embedded": EmbeddedIndex,
    "qdrant": lambda: QdrantIndex.connect(":memory:"),
}


@pytest.fixture(params=sorted(ENGINES))
def index(request: pytest.FixtureRequest) -> Iterator[VectorIndex]:
    engine = ENGINES[request.param]()
    yield engine
    engine.close()


def test_finds_the_enrolled_face_first_and_nothing_below_the_floor(index: VectorIndex) -> None:
    for i in range(50):
        index.upsert("bank-a", f"s{i}", f"ext{i}", face(i), SPACE)
    found = index.search("bank-a", near(face(7), 1), k=3, floor=-1.0, space=SPACE)
    assert found[0].subject_id == "s7"
    assert found[0].external_id == "ext7"
    assert [m.similarity for m in found] == sorted((m.similarity for m in found), reverse=True)
    assert index.search("bank-a", near(face(7), 1), k=3, floor=0.99, space=SPACE) == []


def test_another_clients_subjects_are_never_found(index: VectorIndex) -> None:
    index.upsert("bank-a", "a1", "same-person", face(1), SPACE)
    index.upsert("bank-b", "b1", "other", face(2), SPACE)
    found = index.search("bank-b", face(1), k=5, floor=-1.0, space=SPACE)
    assert [m.subject_id for m in found] == ["b1"]
    assert index.size("bank-a") == 1 and index.size("bank-b") == 1
    index.delete("bank-b", "a1")  # another client's id: nothing happens
    assert index.size("bank-a") == 1


def test_an_erased_subject_is_no_longer_found(index: VectorIndex) -> None:
    index.upsert("bank-a", "s1", "e1", face(1), SPACE)
    index.upsert("bank-a", "s2", "e2", face(2), SPACE)
    index.delete("bank-a", "s1")
    found = index.search("bank-a", face(1), k=5, floor=-1.0, space=SPACE)
    assert "s1" not in [m.subject_id for m in found]
    assert index.size("bank-a") == 1


def test_a_replaced_template_is_searched_as_replaced(index: VectorIndex) -> None:
    index.upsert("bank-a", "s1", "e1", face(1), SPACE)
    index.upsert("bank-a", "s1", "e1", face(99), SPACE)
    assert index.search("bank-a", face(99), k=1, floor=0.99, space=SPACE)[0].subject_id == "s1"
    assert index.search("bank-a", face(1), k=1, floor=0.99, space=SPACE) == []
    assert index.size("bank-a") == 1


def test_templates_of_another_model_are_never_compared(index: VectorIndex) -> None:
    index.upsert("bank-a", "old", "e1", face(1), "dlib_resnet_v1/old")
    assert index.search("bank-a", face(1), k=5, floor=-1.0, space=SPACE) == []


def test_follows_the_store_by_sequence_number(index: VectorIndex) -> None:
    store = FakeStore()
    store.put("bank-a", "s1", "e1", face(1))
    assert sync(index, store) >= 0
    if isinstance(index, QdrantIndex):
        # A server keeps its points: a fresh follower replays the last changes.
        assert index.size("bank-a") == 1
    store.put("bank-a", "s2", "e2", face(2))
    store.erase("bank-a", "s1")
    sync(index, store)
    ids = [m.subject_id for m in index.search("bank-a", face(2), 5, -1.0, SPACE)]
    assert ids == ["s2"]
    assert sync(index, store) == 0  # nothing new: nothing applied


def test_a_write_logged_out_of_order_is_still_applied(index: VectorIndex) -> None:
    store = FakeStore()
    sync(index, store)
    late = store.take_seq()  # taken by a slow writer, logged after the next one
    store.put("bank-a", "s2", "e2", face(2))
    sync(index, store)
    store.put("bank-a", "s1", "e1", face(1), seq=late)
    sync(index, store)
    assert index.search("bank-a", face(1), 1, 0.99, SPACE)[0].subject_id == "s1"


def test_rebuild_loads_every_subject_from_the_store(index: VectorIndex) -> None:
    store = FakeStore()
    for i in range(30):
        store.put("bank-a" if i % 2 else "bank-b", f"s{i}", f"e{i}", face(i))
    index.upsert("bank-a", "ghost", "gone", face(500), SPACE)  # not in the store
    assert asyncio.run(index.rebuild(store)) == 30  # type: ignore[arg-type]
    assert index.size("bank-a") == 15 and index.size("bank-b") == 15
    assert index.search("bank-a", face(500), 1, 0.99, SPACE) == []


def test_the_embedded_index_switches_to_hnsw_and_keeps_deletions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(vectors, "EXACT_BELOW", 100)
    index = EmbeddedIndex()
    for i in range(300):
        index.upsert("bank-a", f"s{i}", f"e{i}", face(i), SPACE)
    index.delete("bank-a", "s10")
    hits = sum(
        index.search("bank-a", near(face(i), i), 1, -1.0, SPACE)[0].subject_id == f"s{i}"
        for i in range(0, 300, 7)
        if i != 10
    )
    assert hits >= 41
    assert all(m.subject_id != "s10" for m in index.search("bank-a", face(10), 5, -1.0, SPACE))
    index.upsert("bank-a", "s10", "e10", face(10), SPACE)  # re-enrolled into a freed slot
    assert index.search("bank-a", face(10), 1, 0.99, SPACE)[0].subject_id == "s10"


def test_mean_template_is_a_unit_vector_between_its_images() -> None:
    a, b = face(1), face(2)
    mean = mean_template([a, b])
    assert abs(float(np.linalg.norm(mean)) - 1.0) < 1e-6
    assert vectors.cosine(mean, a) == pytest.approx(vectors.cosine(mean, b), abs=1e-6)


def test_a_sequence_number_never_logged_stops_holding_the_watermark() -> None:
    store = FakeStore()
    follower = vectors.SeqFollower(patience=0.0)
    store.take_seq()  # a writer that failed after taking its number
    store.put("bank-a", "s2", "e2", face(2))
    changes = asyncio.run(follower.changes(store))  # type: ignore[arg-type]
    assert [c.subject_id for c in changes] == ["s2"]
    assert follower.watermark == 2
    assert follower.applied == {}


def test_a_missing_sequence_number_holds_the_watermark_while_it_may_still_land() -> None:
    store = FakeStore()
    follower = vectors.SeqFollower(patience=60.0)
    late = store.take_seq()
    store.put("bank-a", "s2", "e2", face(2))
    asyncio.run(follower.changes(store))  # type: ignore[arg-type]
    assert follower.watermark == 0
    store.put("bank-a", "s1", "e1", face(1), seq=late)
    again = asyncio.run(follower.changes(store))  # type: ignore[arg-type]
    assert [c.subject_id for c in again] == ["s1"]  # s2 is not applied twice
    assert follower.watermark == 2


def test_a_qdrant_server_is_sent_the_configured_api_key() -> None:
    """Against a stand-in HTTP server answering as Qdrant does: every request carries the
    `api-key` header from FACEVAL_QDRANT_API_KEY (Qdrant refuses requests without it)."""
    import json
    import threading
    import time
    import warnings
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from shared.settings import Settings

    seen: list[tuple[str, str | None]] = []

    class Qdrant(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("api-key")))
            if self.headers.get("api-key") != "s3cret-key":
                self.send_response(403)
                self.end_headers()
                return
            body: dict[str, Any] = {"title": "qdrant", "version": "1.15.0"}
            if self.path.endswith("/exists"):
                body = {"result": {"exists": False}, "status": "ok", "time": 0.0}
            data = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Qdrant)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = Settings(
            vector_engine="qdrant",
            qdrant_url=f"http://127.0.0.1:{server.server_address[1]}",
            qdrant_api_key="s3cret-key",
        )
        with warnings.catch_warnings():
            # qdrant-client warns that the key travels over plain HTTP (a test server).
            warnings.simplefilter("ignore", UserWarning)
            index = vectors.make_index(settings)
            assert isinstance(index, QdrantIndex)
            assert index._collection(SPACE) is None  # asked the server: no such collection
            # The client checks the server's version from a thread of its own: wait for it.
            deadline = time.monotonic() + 10
            while ("/", "s3cret-key") not in seen and time.monotonic() < deadline:
                time.sleep(0.01)
        index.close()
    finally:
        server.shutdown()
    assert any(path.endswith("/exists") for path, _ in seen) and ("/", "s3cret-key") in seen
    assert {key for _, key in seen} == {"s3cret-key"}
