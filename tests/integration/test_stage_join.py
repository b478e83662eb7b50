"""The stage runtime's join and single write, on the real Redis and MongoDB-wire server:
one decision per stage, a redelivered winner publishes again, a duplicate records nothing
twice, and the last stage ends the transaction and cleans up after it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import redis
from pymongo import MongoClient

from shared import transactions
from shared.analysis import Face, Image, Model, ModelInfo, ModelResult
from shared.blobstore import image_key, join_key
from shared.imaging import encode_jpeg
from shared.pipeline import StageDefinition, StageName
from shared.runtime import StageOutOfOrder, StageRuntime
from shared.schema import StageJob
from shared.storage import COMPLETED, PENDING, Doc
from tools.stack import Stack

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Passes:
    key: str = "passes"
    info: ModelInfo = field(default=ModelInfo(name="passes", version="1"))

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        return ModelResult(scores={"height": float(image.shape[0])})


def _passes(_: object) -> Sequence[Model]:
    return [Passes()]


def _definition(name: StageName) -> StageDefinition:
    return StageDefinition(name=name, build_models=_passes, needs_face=False)


@pytest.fixture
def world(stack: Stack) -> Iterator[tuple[Stack, MongoClient[Doc], redis.Redis]]:
    mongo: MongoClient[Doc] = MongoClient(stack.settings.mongo_url, tz_aware=True)
    store = redis.Redis.from_url(stack.settings.redis_url)
    yield stack, mongo, store
    mongo.close()
    store.close()


def _new_transaction(
    world: tuple[Stack, MongoClient[Doc], redis.Redis], decided: Sequence[StageName] = ()
) -> list[StageJob]:
    """A pending transaction, its images in Redis, and the stages `decided` passed."""
    stack, mongo, store = world
    tid = f"join-{uuid.uuid4().hex}"
    doc = transactions.new_transaction(
        transaction_id=tid, client_id="c-join", client_name="join", user_name="u",
        documento="d", process_guid=None, client_reference=None, service="test",
        api_hash="test", images={}, expires_at=None, deadline_seconds=60,
    )  # fmt: skip
    for stage in decided:
        doc["stages"][stage] = {"decision": {"outcome": "pass", "delivery": "earlier"}}
    mongo[stack.settings.mongo_db]["transactions"].insert_one(doc)
    jpeg = encode_jpeg(np.full((40, 30, 3), 120, dtype=np.uint8))
    for side in ("near", "far"):
        store.set(image_key(tid, side), jpeg, ex=60)
    return transactions.first_stage_jobs(doc)


def _doc(world: tuple[Stack, MongoClient[Doc], redis.Redis], tid: str) -> Doc:
    stack, mongo, _ = world
    found = mongo[stack.settings.mongo_db]["transactions"].find_one({"_id": tid})
    assert found is not None
    return found


def test_one_decision_per_stage_a_redelivered_winner_publishes_again_and_duplicates_do_nothing(
    world: tuple[Stack, MongoClient[Doc], redis.Redis],
) -> None:
    stack = world[0]
    near, far = _new_transaction(world)
    runtime = StageRuntime(_definition("face_detector"), stack.settings)
    try:
        assert runtime.handle(near, time.time_ns(), "near-1").follow_ups == []
        assert "face_detector" not in _doc(world, near.transaction_id)["stages"]
        follow_ups = runtime.handle(far, time.time_ns(), "far-1").follow_ups
        assert [(j.image, j.client_id) for j in follow_ups] == [("near", "c-join"),
                                                               ("far", "c-join")]  # fmt: skip
        stage = _doc(world, near.transaction_id)["stages"]["face_detector"]
        assert stage["decision"]["outcome"] == "pass"
        assert stage["decision"]["delivery"] == "far-1"
        assert stage["near"]["scores"]["passes"]["values"]["height"] == 40.0
        written = (stage["near"]["started_at"], stage["far"]["started_at"])
        # The winner redelivered (it may have died before publishing): it publishes again.
        assert len(runtime.handle(far, time.time_ns(), "far-1").follow_ups) == 2
        # A duplicate of the other image (another message): nothing to publish, nothing
        # written twice.
        assert runtime.handle(near, time.time_ns(), "near-2").follow_ups == []
        stage = _doc(world, near.transaction_id)["stages"]["face_detector"]
        assert (stage["near"]["started_at"], stage["far"]["started_at"]) == written
        assert _doc(world, near.transaction_id)["status"] == PENDING
    finally:
        runtime.close()


def test_the_last_stage_ends_the_transaction_once_and_cleans_up(
    world: tuple[Stack, MongoClient[Doc], redis.Redis],
) -> None:
    stack, _, store = world
    near, far = _new_transaction(world, decided=("face_detector", "accessory", "quality",
                                                 "identity"))  # fmt: skip
    runtime = StageRuntime(_definition("pad"), stack.settings)
    try:
        runtime.handle(near, time.time_ns(), "near-1")
        assert runtime.handle(far, time.time_ns(), "far-1").follow_ups == []
        doc = _doc(world, near.transaction_id)
        assert doc["status"] == COMPLETED
        assert doc["summary_reason"] == "accepted"
        assert doc["stages"]["pad"]["decision"]["outcome"] == "pass"
        assert doc["total_time_ms"] > 0
        tid = near.transaction_id
        assert not store.exists(join_key(tid), image_key(tid, "near"), image_key(tid, "far"))
        # A late duplicate finds the images gone: it changes nothing.
        runtime.handle(near, time.time_ns(), "near-2")
        assert _doc(world, tid)["summary_reason"] == "accepted"
    finally:
        runtime.close()


@dataclass
class Counts:
    """Passes, counting the images it analysed."""

    key: str = "passes"
    info: ModelInfo = field(default=ModelInfo(name="passes", version="1"))
    calls: list[int] = field(default_factory=list)

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        self.calls.append(image.shape[0])
        return ModelResult(scores={"height": float(image.shape[0])})


def test_a_redelivered_job_that_had_joined_keeps_its_result_and_is_never_a_poison_job(
    world: tuple[Stack, MongoClient[Doc], redis.Redis],
) -> None:
    stack = world[0]
    near, far = _new_transaction(world)
    model = Counts()
    definition = StageDefinition(name="face_detector", build_models=lambda _: [model],
                                 needs_face=False)  # fmt: skip
    runtime = StageRuntime(definition, stack.settings)
    try:
        runtime.handle(near, time.time_ns(), "near-1")
        assert model.calls == [40]
        # The broker lost near's acknowledgement again and again (restarts): each redelivery
        # finds its result joined, runs no model and is not counted towards a poison job.
        for _ in range(stack.settings.max_job_attempts + 1):
            assert runtime.handle(near, time.time_ns(), "near-1").follow_ups == []
        assert model.calls == [40]
        assert len(runtime.handle(far, time.time_ns(), "far-1").follow_ups) == 2
        stage = _doc(world, near.transaction_id)["stages"]["face_detector"]
        assert stage["decision"]["outcome"] == "pass"
        assert "attempts" not in stage["near"]
        assert model.calls == [40, 40]
    finally:
        runtime.close()


def test_the_next_jobs_go_out_before_the_write_and_the_next_stage_waits_for_it(
    world: tuple[Stack, MongoClient[Doc], redis.Redis],
) -> None:
    stack = world[0]
    near, far = _new_transaction(world)
    tid = near.transaction_id
    sent: list[tuple[str, list[str], bool]] = []

    def send(stage: StageName, jobs: Sequence[StageJob]) -> None:
        recorded = "face_detector" in _doc(world, tid)["stages"]
        sent.append((stage, [j.image for j in jobs], recorded))

    detector = StageRuntime(_definition("face_detector"), stack.settings)
    accessory = StageRuntime(_definition("accessory"), stack.settings)
    try:
        detector.handle(near, time.time_ns(), "near-1", send=send)
        assert sent == []
        follow_ups = detector.handle(far, time.time_ns(), "far-1", send=send).follow_ups
        # Sent while the stage was not yet in MongoDB: the broker persists them meanwhile.
        assert sent == [("accessory", ["near", "far"], False)]
        assert _doc(world, tid)["stages"]["face_detector"]["decision"]["outcome"] == "pass"
        # The next stage's jobs overtook the write: had it not landed yet, the next stage
        # could not record before it, and its decider is retried (keeping its result).
        mongo = world[1][stack.settings.mongo_db]["transactions"]
        mongo.update_one({"_id": tid}, {"$unset": {"stages.face_detector": ""}})
        accessory.handle(follow_ups[0], time.time_ns(), "acc-near")
        with pytest.raises(StageOutOfOrder):
            accessory.handle(follow_ups[1], time.time_ns(), "acc-far")
        assert "accessory" not in _doc(world, tid)["stages"]
        mongo.update_one({"_id": tid}, {"$set": {"stages.face_detector": {
            "decision": {"outcome": "pass", "delivery": "far-1"}}}})  # fmt: skip
        assert len(accessory.handle(follow_ups[1], time.time_ns(), "acc-far").follow_ups) == 2
        assert _doc(world, tid)["stages"]["accessory"]["decision"]["outcome"] == "pass"
    finally:
        detector.close()
        accessory.close()


def test_a_decider_whose_write_lost_the_race_with_the_previous_stages_write_writes_again(
    world: tuple[Stack, MongoClient[Doc], redis.Redis], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack, mongo, _ = world
    near, far = _new_transaction(world)
    tid = near.transaction_id
    transactions_ = mongo[stack.settings.mongo_db]["transactions"]
    runtime = StageRuntime(_definition("accessory"), stack.settings)
    record_stage = runtime.store.record_stage
    writes: list[bool] = []

    def racing(*args: Any, **kwargs: Any) -> bool:
        won = record_stage(*args, **kwargs)
        if not writes:
            # The detector's write lands just after this one was refused for lacking it.
            transactions_.update_one({"_id": tid}, {"$set": {"stages.face_detector": {
                "decision": {"outcome": "pass", "delivery": "d"}}}})  # fmt: skip
        writes.append(won)
        return won

    monkeypatch.setattr(runtime.store, "record_stage", racing)
    try:
        runtime.handle(near, time.time_ns(), "acc-near")
        assert len(runtime.handle(far, time.time_ns(), "acc-far").follow_ups) == 2
        assert writes == [False, True]
        assert _doc(world, tid)["stages"]["accessory"]["decision"]["delivery"] == "acc-far"
    finally:
        runtime.close()
