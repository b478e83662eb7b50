"""Extract: finished transactions from MongoDB to the analysts' columns, anonymised.

Each document is flattened by `etl.columns.analyst_row` (the one definition of the
columns), its identifiers are re-keyed, and everything else in the document is left
behind. The result is an Arrow table with the extract schema.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

import pyarrow as pa

from etl.anonymise import anonymise_row
from etl.columns import analyst_row
from etl.dates import DayRange
from etl.errors import SourceUnavailable
from etl.progress import progress_bar
from etl.schema import EXTRACT_FIELDS, EXTRACT_SCHEMA
from shared.settings import Settings
from shared.storage import PyMongoError, Store
from tools.stack import Stack, StackError, port_open


class ExtractBuilder:
    """Collects rows column by column (cheaper than a list of dicts at a million rows)."""

    def __init__(self, secret: str) -> None:
        self._secret = secret
        self._columns: dict[str, list[Any]] = {f.name: [] for f in EXTRACT_FIELDS}
        self.rows = 0

    def add(self, doc: Mapping[str, Any]) -> None:
        row = anonymise_row(analyst_row(doc), self._secret)
        for name, values in self._columns.items():
            values.append(row[name])
        self.rows += 1

    def table(self) -> pa.Table:
        arrays = [
            pa.array(self._columns[f.name], type=EXTRACT_SCHEMA.field(f.name).type)
            for f in EXTRACT_FIELDS
        ]
        return pa.Table.from_arrays(arrays, schema=EXTRACT_SCHEMA)


def extract_documents(docs: Iterable[Mapping[str, Any]], secret: str) -> pa.Table:
    builder = ExtractBuilder(secret)
    for doc in docs:
        builder.add(doc)
    return builder.table()


def mongo_host(url: str) -> str:
    """Host and port only: a URL may carry a password, and messages end up in logs."""
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or 27017}"


async def _extract(
    settings: Settings, days: DayRange, include_synthetic: bool, builder: ExtractBuilder
) -> None:
    store = Store(settings.mongo_url, settings.mongo_db)
    try:
        total = await store.count_finished(days.start, days.end, include_synthetic)
        with progress_bar(total, "extract", "docs") as bar:
            async for doc in store.finished_transactions(days.start, days.end, include_synthetic):
                builder.add(doc)
                bar.update(1)
    finally:
        store.close()


def extract_from_mongo(settings: Settings, days: DayRange, include_synthetic: bool) -> pa.Table:
    builder = ExtractBuilder(settings.etl_pseudonym_secret.get_secret_value())
    try:
        asyncio.run(_extract(settings, days, include_synthetic, builder))
    except PyMongoError as exc:
        reason = str(exc).split(",")[0][:200]
        raise SourceUnavailable(
            f"cannot reach MongoDB at {mongo_host(settings.mongo_url)}: {reason}"
        ) from exc
    return builder.table()


async def _first_day(settings: Settings, include_synthetic: bool) -> datetime | None:
    store = Store(settings.mongo_url, settings.mongo_db)
    try:
        return await store.first_finished_at(include_synthetic)
    finally:
        store.close()


def first_transaction_day(settings: Settings, include_synthetic: bool) -> date | None:
    """UTC day of the oldest finished transaction, or None when there is none."""
    try:
        first = asyncio.run(_first_day(settings, include_synthetic))
    except PyMongoError as exc:
        reason = str(exc).split(",")[0][:200]
        raise SourceUnavailable(
            f"cannot reach MongoDB at {mongo_host(settings.mongo_url)}: {reason}"
        ) from exc
    return None if first is None else first.date()


@contextmanager
def operational_store(settings: Settings) -> Iterator[None]:
    """MongoDB for the duration of an extract: the one configured, or, where the stack
    would start the embedded server (local URL, nothing answering), that server on the
    stack's files, stopped afterwards, so a run after `faceval simulate` finds its data."""
    parts = urlsplit(settings.mongo_url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 27017
    local = host in ("127.0.0.1", "localhost")
    if port_open(host, port) or not (settings.embedded_mongo and local):
        yield
        return
    stack = Stack(settings=settings, port=0, state_dir=settings.state_dir.resolve())
    stack.log_dir.mkdir(parents=True, exist_ok=True)
    try:
        # The same start-up `faceval up` uses, without the broker, cache and services.
        stack._ensure_mongo()
    except StackError as exc:
        stack.stop()
        raise SourceUnavailable(
            f"cannot reach MongoDB at {mongo_host(settings.mongo_url)}: {exc}"
        ) from exc
    try:
        yield
    finally:
        stack.stop()
