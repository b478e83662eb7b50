"""MongoDB access: the only module that imports motor or pymongo's client.

One document per transaction; stage results are written with conditional updates so a
redelivered job can never record twice or advance a transaction twice. `Store` (motor) is
the gateway's and the tools'; `WorkerStore` (pymongo, synchronous) is a stage worker's: its
task threads call the database directly, with no event loop to hand work to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING, MongoClient
from pymongo.errors import DuplicateKeyError, PyMongoError

Doc = dict[str, Any]

PENDING = "pending"
COMPLETED = "completed"
#: Written when a transaction ends; removed if an operator reopens it.
FINAL_FIELDS = (
    "summary_code", "summary_status", "summary_reason", "summary_desc", "http_code",
    "total_time_ms", "decided_by", "reasons", "finished_at",
)  # fmt: skip

__all__ = [
    "COMPLETED",
    "PENDING",
    "Doc",
    "DuplicateKeyError",
    "PyMongoError",
    "Store",
    "WorkerStore",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def client_options(timeout_ms: int) -> dict[str, Any]:
    # Bounded waits everywhere: a stalled database must surface as an error to retry,
    # never as a job that hangs forever.
    return {
        "serverSelectionTimeoutMS": timeout_ms,
        "connectTimeoutMS": timeout_ms,
        "socketTimeoutMS": 2 * timeout_ms,
        "tz_aware": True,
        "uuidRepresentation": "standard",
    }


def _pending_without(transaction_id: str, path: str) -> Doc:
    """The filter of every conditional write: still pending, and `path` not written yet."""
    return {"_id": transaction_id, "status": PENDING, path: {"$exists": False}}


class Store:
    """Transactions and clients. Create one per event loop (motor binds to a loop)."""

    def __init__(self, url: str, database: str, timeout_ms: int = 5000) -> None:
        self._client: AsyncIOMotorClient[Doc] = AsyncIOMotorClient(
            url, **client_options(timeout_ms)
        )
        self._db: AsyncIOMotorDatabase[Doc] = self._client[database]
        self.transactions = self._db["transactions"]
        self.clients = self._db["clients"]
        #: Enrolled faces as templates (never images), per client; `subject_log` orders their
        #: changes by `seq` so vector indexes can follow (shared/vectors.py).
        self.subjects = self._db["subjects"]
        self.subject_log = self._db["subject_log"]
        self.counters = self._db["counters"]
        #: Idempotency-Key -> the transaction it created, per client, for a retention window.
        self.idempotency = self._db["idempotency_keys"]

    def close(self) -> None:
        self._client.close()

    async def ping(self) -> None:
        await self._db.command("ping")

    async def ensure_indexes(self, retention_days: int) -> None:
        tx = self.transactions
        # Status endpoint and per-client listing.
        await tx.create_index([("client_id", ASCENDING), ("created_at", DESCENDING)])
        # The sweeper looks for pending transactions past their deadline.
        await tx.create_index([("status", ASCENDING), ("deadline_at", ASCENDING)])
        # ETL watermark and retry patterns (user within a process, in time order).
        await tx.create_index([("finished_at", ASCENDING)])
        await tx.create_index(
            [("convenio", ASCENDING), ("user_name", ASCENDING), ("created_at", ASCENDING)]
        )
        if retention_days > 0:
            await tx.create_index(
                [("expires_at", ASCENDING)], expireAfterSeconds=0, name="retention_ttl"
            )
        # A client's own id for a person names one subject; listing pages by subject id.
        await self.subjects.create_index(
            [("client_id", ASCENDING), ("external_id", ASCENDING)], unique=True
        )
        await self.subjects.create_index([("client_id", ASCENDING), ("_id", ASCENDING)])
        # Followers re-read the log from their watermark (its _id is the seq); a week
        # covers any replica's absence, a longer one rebuilds from `subjects`.
        await self.subject_log.create_index(
            [("at", ASCENDING)], expireAfterSeconds=7 * 86400, name="subject_log_ttl"
        )
        await self.clients.create_index([("key_hash", ASCENDING)], unique=True)
        # The key is the _id (unique by construction); expired keys are deleted by TTL.
        await self.idempotency.create_index(
            [("expires_at", ASCENDING)], expireAfterSeconds=0, name="idempotency_ttl"
        )
        await self.clients.create_index([("name", ASCENDING)], unique=True)

    # --- transactions ---------------------------------------------------------------------

    async def create_transaction(self, doc: Doc) -> None:
        await self.transactions.insert_one(doc)

    async def get_transaction(
        self, transaction_id: str, fields: Iterable[str] | None = None
    ) -> Doc | None:
        projection = dict.fromkeys(fields, 1) if fields is not None else None
        return await self.transactions.find_one({"_id": transaction_id}, projection)

    async def get_client_transaction(self, transaction_id: str, client_id: str) -> Doc | None:
        return await self.transactions.find_one({"_id": transaction_id, "client_id": client_id})

    async def recent_client_transactions(self, client_id: str, limit: int) -> list[Doc]:
        cursor = (
            self.transactions.find(
                # Validations only: probe images of the subjects API carry `until`.
                {"client_id": client_id, "until": None},
                {"status": 1, "summary_code": 1, "summary_reason": 1, "created_at": 1},
            )
            .sort("created_at", DESCENDING)
            .limit(limit)
        )
        return [doc async for doc in cursor]

    async def mark_queued(self, transaction_id: str) -> None:
        """The first stage's jobs were confirmed by the broker (publish-or-repair)."""
        await self.transactions.update_one(
            {"_id": transaction_id}, {"$set": {"queued_at": utcnow()}}
        )

    async def unqueued_pending(self, created_before: datetime, limit: int = 100) -> list[Doc]:
        """Pending transactions never confirmed queued and with no stage result yet: their
        gateway died (or lost the broker) between inserting them and publishing their jobs."""
        cursor = self.transactions.find(
            {
                "status": PENDING,
                "queued_at": {"$exists": False},
                "stages": {},
                "created_at": {"$lt": created_before},
            },
            {"_id": 1, "policy": 1, "client_id": 1, "created_ns": 1, "until": 1},
        ).limit(limit)
        return [doc async for doc in cursor]

    async def claim_idempotency_key(
        self, client_id: str, key: str, transaction_id: str, fingerprint: str, expires_at: datetime
    ) -> Doc | None:
        """Reserve a client's key for a new transaction: None if reserved now, else the
        live reservation that holds it (an expired one not yet removed is taken over)."""
        key_id = f"{client_id}:{key}"
        entry = {
            "transaction_id": transaction_id,
            "fingerprint": fingerprint,
            "client_id": client_id,
            "created_at": utcnow(),
            "expires_at": expires_at,
        }
        try:
            await self.idempotency.insert_one({"_id": key_id, **entry})
            return None
        except DuplicateKeyError:
            pass
        taken = await self.idempotency.update_one(
            {"_id": key_id, "expires_at": {"$lt": utcnow()}}, {"$set": entry}
        )
        if taken.modified_count == 1:
            return None
        return await self.idempotency.find_one({"_id": key_id})

    async def release_idempotency_key(self, client_id: str, key: str, transaction_id: str) -> None:
        """Free a key whose request created nothing (it failed), so a retry can use it."""
        await self.idempotency.delete_one(
            {"_id": f"{client_id}:{key}", "transaction_id": transaction_id}
        )

    async def finalize(self, transaction_id: str, fields: Mapping[str, Any]) -> Doc | None:
        """Move a pending transaction to its final state; None if it had already ended."""
        outcome = await self.transactions.update_one(
            {"_id": transaction_id, "status": PENDING},
            {"$set": {**fields, "status": COMPLETED}},
        )
        if outcome.modified_count != 1:
            return None
        return await self.transactions.find_one({"_id": transaction_id})

    async def stale_pending(self, now: datetime, limit: int = 500) -> list[str]:
        cursor = self.transactions.find(
            {"status": PENDING, "deadline_at": {"$lt": now}}, {"_id": 1}
        ).limit(limit)
        return [doc["_id"] async for doc in cursor]

    async def reopen(
        self, transaction_id: str, stage: str, images: Sequence[str], deadline: datetime
    ) -> bool:
        """Put a dead-lettered transaction back to pending, forgetting the failed results."""
        forget = {f"stages.{stage}.{image}": "" for image in images}
        outcome = await self.transactions.update_one(
            {"_id": transaction_id, "summary_reason": "internal_error"},
            {
                "$set": {"status": PENDING, "deadline_at": deadline},
                "$unset": {
                    **forget,
                    f"stages.{stage}.decision": "",
                    **{field: "" for field in FINAL_FIELDS},
                },
            },
        )
        return outcome.modified_count == 1

    # --- analytics (ETL) reads --------------------------------------------------------------

    @staticmethod
    def _finished_between(
        start: datetime | None, end: datetime | None, include_synthetic: bool
    ) -> Doc:
        created: Doc = {}
        if start is not None:
            created["$gte"] = start
        if end is not None:
            created["$lt"] = end
        query: Doc = {"status": COMPLETED}
        if created:
            query["created_at"] = created
        if not include_synthetic:
            # Scale-test documents never reach real reports unless asked for.
            query["synthetic"] = {"$ne": True}
        return query

    async def count_finished(
        self, start: datetime | None, end: datetime | None, include_synthetic: bool = False
    ) -> int:
        query = self._finished_between(start, end, include_synthetic)
        return int(await self.transactions.count_documents(query))

    async def finished_transactions(
        self,
        start: datetime | None,
        end: datetime | None,
        include_synthetic: bool = False,
        batch_size: int = 1000,
    ) -> AsyncIterator[Doc]:
        """Finished transactions created in [start, end), streamed (the ETL's extract)."""
        query = self._finished_between(start, end, include_synthetic)
        # Rejection details (free text) are not analysts' columns: never read them.
        cursor = self.transactions.find(query, {"reasons": 0}, batch_size=batch_size)
        async for doc in cursor:
            yield doc

    async def first_finished_at(self, include_synthetic: bool = False) -> datetime | None:
        """Creation time of the oldest finished transaction (where a first ETL run starts)."""
        query = self._finished_between(None, None, include_synthetic)
        cursor = self.transactions.find(query, {"created_at": 1}).sort("created_at", 1).limit(1)
        async for doc in cursor:
            created = doc.get("created_at")
            return created if isinstance(created, datetime) else None
        return None

    async def insert_transactions(self, docs: Iterable[Doc]) -> int:
        """Bulk insert (synthetic scale-test documents); returns how many were written."""
        batch = list(docs)
        if not batch:
            return 0
        result = await self.transactions.insert_many(batch, ordered=False)
        return len(result.inserted_ids)

    async def record_identity_checks(self, transaction_id: str, checks: Mapping[str, Any]) -> Doc:
        """Store a finished validation's 1:1 and 1:N answers once: the first reader's stand
        (the gallery may change later); the document as stored."""
        await self.transactions.update_one(
            {"_id": transaction_id, "status": COMPLETED, "identity_checks": {"$exists": False}},
            {"$set": {"identity_checks": dict(checks)}},
        )
        doc = await self.transactions.find_one({"_id": transaction_id})
        assert doc is not None
        return doc

    # --- subjects (1:1 and 1:N templates) ---------------------------------------------------

    async def _next_subject_seq(self) -> int:
        counter = await self.counters.find_one_and_update(
            {"_id": "subject_seq"}, {"$inc": {"value": 1}}, upsert=True, return_document=True
        )
        assert counter is not None
        return int(counter["value"])

    async def _log_subject_change(self, seq: int, client_id: str, subject_id: str, op: str) -> None:
        await self.subject_log.insert_one(
            {"_id": seq, "client_id": client_id, "subject_id": subject_id, "op": op,
             "at": utcnow()}
        )  # fmt: skip

    async def put_subject(
        self, client_id: str, external_id: str, new_id: str, fields: Mapping[str, Any]
    ) -> tuple[Doc, bool]:
        """Enrol, or replace the template of the client's subject with this external id
        (its subject id stays); (the subject as stored, whether it was created)."""
        for _ in range(2):
            seq = await self._next_subject_seq()
            now = utcnow()
            replaced = await self.subjects.update_one(
                {"client_id": client_id, "external_id": external_id},
                {"$set": {**fields, "seq": seq, "updated_at": now}},
            )
            created = False
            if replaced.matched_count == 0:
                try:
                    await self.subjects.insert_one(
                        {"_id": new_id, "client_id": client_id, "external_id": external_id,
                         **fields, "seq": seq, "created_at": now, "updated_at": now}
                    )  # fmt: skip
                    created = True
                except DuplicateKeyError:
                    continue  # enrolled at the same moment by another request: replace it
            doc = await self.subjects.find_one({"client_id": client_id, "external_id": external_id})
            assert doc is not None
            await self._log_subject_change(seq, client_id, str(doc["_id"]), "put")
            return doc, created
        raise DuplicateKeyError("subject enrolled concurrently; retry")

    async def get_subject(self, client_id: str, subject_id: str) -> Doc | None:
        return await self.subjects.find_one({"_id": subject_id, "client_id": client_id})

    async def list_subjects(self, client_id: str, limit: int, after: str | None) -> list[Doc]:
        query: Doc = {"client_id": client_id}
        if after:
            query["_id"] = {"$gt": after}
        cursor = self.subjects.find(query, {"images": 0}).sort("_id", ASCENDING).limit(limit)
        return [doc async for doc in cursor]

    async def delete_subject(self, client_id: str, subject_id: str) -> bool:
        """Erase a subject (its templates with it); False if the client has none by that id."""
        seq = await self._next_subject_seq()
        outcome = await self.subjects.delete_one({"_id": subject_id, "client_id": client_id})
        if outcome.deleted_count != 1:
            return False
        await self._log_subject_change(seq, client_id, subject_id, "delete")
        return True

    async def count_subjects(self, client_id: str) -> int:
        return int(await self.subjects.count_documents({"client_id": client_id}))

    async def subject_changes(self, after_seq: int, limit: int = 10_000) -> list[Doc]:
        cursor = self.subject_log.find({"_id": {"$gt": after_seq}}).sort("_id", ASCENDING)
        return [doc async for doc in cursor.limit(limit)]

    async def subjects_by_ids(self, subject_ids: Sequence[str]) -> list[Doc]:
        cursor = self.subjects.find({"_id": {"$in": list(subject_ids)}}, {"images": 0})
        return [doc async for doc in cursor]

    async def all_subjects(self, batch_size: int = 5000) -> AsyncIterator[Doc]:
        cursor = self.subjects.find({}, {"images": 0}, batch_size=batch_size)
        async for doc in cursor:
            yield doc

    async def last_subject_seq(self) -> int:
        counter = await self.counters.find_one({"_id": "subject_seq"})
        return int(counter["value"]) if counter else 0

    # --- clients --------------------------------------------------------------------------

    async def create_client(
        self, client_id: str, name: str, key_hash: str, rate_limit_per_minute: int | None = None
    ) -> None:
        await self.clients.insert_one(
            {
                "_id": client_id,
                "name": name,
                "key_hash": key_hash,
                "rate_limit_per_minute": rate_limit_per_minute,
                "created_at": utcnow(),
                "revoked_at": None,
            }
        )

    async def client_by_key_hash(self, key_hash: str) -> Doc | None:
        return await self.clients.find_one({"key_hash": key_hash, "revoked_at": None})

    async def client_by_name(self, name: str) -> Doc | None:
        return await self.clients.find_one({"name": name})

    async def rotate_client_key(self, name: str, key_hash: str) -> bool:
        outcome = await self.clients.update_one(
            {"name": name}, {"$set": {"key_hash": key_hash, "revoked_at": None}}
        )
        return outcome.matched_count == 1

    async def revoke_client(self, name: str) -> bool:
        outcome = await self.clients.update_one(
            {"name": name, "revoked_at": None}, {"$set": {"revoked_at": utcnow()}}
        )
        return outcome.modified_count == 1

    async def list_clients(self) -> list[Doc]:
        """Every client, without its key hash."""
        cursor = self.clients.find({}, {"key_hash": 0}).sort("name", 1)
        return [doc async for doc in cursor]

    async def set_client_policy(self, name: str, policy: Mapping[str, Any] | None) -> bool:
        """The client's own decision policy (see shared.pipeline.Policy.build); None clears."""
        outcome = await self.clients.update_one({"name": name}, {"$set": {"policy": policy}})
        return outcome.matched_count == 1


def expiry(created_at: datetime, retention_days: int) -> datetime | None:
    return created_at + timedelta(days=retention_days) if retention_days > 0 else None


class WorkerStore:
    """A stage worker's MongoDB: one conditional write per stage decision on the hot path."""

    def __init__(self, url: str, database: str, timeout_ms: int = 5000) -> None:
        self._client: MongoClient[Doc] = MongoClient(url, **client_options(timeout_ms))
        self.transactions = self._client[database]["transactions"]

    def close(self) -> None:
        self._client.close()

    def get_transaction(
        self, transaction_id: str, fields: Iterable[str] | None = None
    ) -> Doc | None:
        projection = dict.fromkeys(fields, 1) if fields is not None else None
        return self.transactions.find_one({"_id": transaction_id}, projection)

    def record_stage(
        self,
        transaction_id: str,
        stage: str,
        records: Mapping[Any, Mapping[str, Any]],
        decision: Mapping[str, Any],
        final: Mapping[str, Any] | None = None,
        after: str | None = None,
    ) -> bool:
        """Write a stage's image results and its decision at once (and, when the decision
        ends the transaction, its final fields): True for the one write that won; False
        for a redelivery, a second decider, a transaction that had already ended, or (with
        `after`, the stage before) one whose previous stage has no decision yet."""
        update: Doc = {f"stages.{stage}.{side}": dict(r) for side, r in records.items()}
        update[f"stages.{stage}.decision"] = dict(decision)
        if final is not None:
            update.update(final)
            update["status"] = COMPLETED
        query = _pending_without(transaction_id, f"stages.{stage}.decision")
        if after is not None:
            query[f"stages.{after}.decision"] = {"$exists": True}
        outcome = self.transactions.update_one(query, {"$set": update})
        return outcome.modified_count == 1

    def finalize(self, transaction_id: str, fields: Mapping[str, Any]) -> bool:
        """Move a pending transaction to its final state; False if it had already ended."""
        outcome = self.transactions.update_one(
            {"_id": transaction_id, "status": PENDING},
            {"$set": {**fields, "status": COMPLETED}},
        )
        return outcome.modified_count == 1
