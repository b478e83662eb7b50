"""MongoDB access: the only module that imports motor.

One document per transaction; stage results are written with conditional updates so a
redelivered job can never record twice or advance a transaction twice.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorDatabase
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError

Doc = dict[str, Any]

PENDING = "pending"
COMPLETED = "completed"

__all__ = ["COMPLETED", "PENDING", "Doc", "DuplicateKeyError", "PyMongoError", "Store"]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Store:
    """Transactions and clients. Create one per event loop (motor binds to a loop)."""

    def __init__(self, url: str, database: str, timeout_ms: int = 5000) -> None:
        self._client: AsyncIOMotorClient[Doc] = AsyncIOMotorClient(
            url, serverSelectionTimeoutMS=timeout_ms, tz_aware=True, uuidRepresentation="standard"
        )
        self._db: AsyncIOMotorDatabase[Doc] = self._client[database]
        self.transactions = self._db["transactions"]
        self.clients = self._db["clients"]

    def close(self) -> None:
        self._client.close()

    async def ping(self) -> None:
        await self._db.command("ping")

    async def ensure_indexes(self, retention_days: int) -> None:
        tx = self.transactions
        # Status endpoint and per-client listing.
        await tx.create_index([("client_id", ASCENDING), ("created_at", DESCENDING)])
        # The sweeper looks for old pending transactions.
        await tx.create_index([("status", ASCENDING), ("created_at", ASCENDING)])
        # ETL watermark and retry patterns (user within a process, in time order).
        await tx.create_index([("finished_at", ASCENDING)])
        await tx.create_index(
            [("convenio", ASCENDING), ("user_name", ASCENDING), ("created_at", ASCENDING)]
        )
        if retention_days > 0:
            await tx.create_index(
                [("expires_at", ASCENDING)], expireAfterSeconds=0, name="retention_ttl"
            )
        await self.clients.create_index([("key_hash", ASCENDING)], unique=True)
        await self.clients.create_index([("name", ASCENDING)], unique=True)

    # --- transactions ---------------------------------------------------------------------

    async def create_transaction(self, doc: Doc) -> None:
        await self.transactions.insert_one(doc)

    async def get_transaction(self, transaction_id: str) -> Doc | None:
        return await self.transactions.find_one({"_id": transaction_id})

    async def get_client_transaction(self, transaction_id: str, client_id: str) -> Doc | None:
        return await self.transactions.find_one({"_id": transaction_id, "client_id": client_id})

    async def record_image_result(
        self, transaction_id: str, stage: str, image: str, result: Mapping[str, Any]
    ) -> bool:
        """Store one image's stage result once; False if it was already there (redelivery)."""
        path = f"stages.{stage}.{image}"
        outcome = await self.transactions.update_one(
            {"_id": transaction_id, "status": PENDING, path: {"$exists": False}},
            {"$set": {path: dict(result)}},
        )
        return outcome.modified_count == 1

    async def claim_decision(
        self, transaction_id: str, stage: str, decision: Mapping[str, Any]
    ) -> bool:
        """Atomically record the stage's decision; only one of near/far ever wins."""
        path = f"stages.{stage}.decision"
        outcome = await self.transactions.update_one(
            {"_id": transaction_id, "status": PENDING, path: {"$exists": False}},
            {"$set": {path: dict(decision)}},
        )
        return outcome.modified_count == 1

    async def mark_advanced(self, transaction_id: str, stage: str) -> None:
        await self.transactions.update_one(
            {"_id": transaction_id}, {"$set": {f"stages.{stage}.decision.advanced": True}}
        )

    async def finalize(self, transaction_id: str, fields: Mapping[str, Any]) -> Doc | None:
        """Move a pending transaction to its final state; None if it had already ended."""
        return await self.transactions.find_one_and_update(
            {"_id": transaction_id, "status": PENDING},
            {"$set": {**fields, "status": COMPLETED}},
            return_document=ReturnDocument.AFTER,
        )

    async def stale_pending(self, created_before: datetime, limit: int = 500) -> list[str]:
        cursor = self.transactions.find(
            {"status": PENDING, "created_at": {"$lt": created_before}}, {"_id": 1}
        ).limit(limit)
        return [doc["_id"] async for doc in cursor]

    # --- clients --------------------------------------------------------------------------

    async def create_client(self, client_id: str, name: str, key_hash: str) -> None:
        await self.clients.insert_one(
            {
                "_id": client_id,
                "name": name,
                "key_hash": key_hash,
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


def expiry(created_at: datetime, retention_days: int) -> datetime | None:
    return created_at + timedelta(days=retention_days) if retention_days > 0 else None
