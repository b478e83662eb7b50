"""What every route needs: the process-wide clients (built once in the app's lifespan) and
the calling client, authenticated by its API key."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, Header, Query, Request

from gateway.errors import ApiError
from gateway.limits import QueueDepthWatch
from gateway.openapi_examples import error_examples, examples
from gateway.waiter import DoneWaiter
from shared import apikeys, codes, metrics
from shared.blobstore import AsyncBlobStore
from shared.schema import ErrorBody
from shared.settings import Settings
from shared.storage import Store
from shared.vectors import VectorIndex


@dataclass
class Deps:
    settings: Settings
    store: Store
    blobs: AsyncBlobStore
    celery: Celery
    waiter: DoneWaiter
    api_hash: str
    depth: QueueDepthWatch
    #: The subjects' template index, built on first use (gateway/gallery.py).
    index: VectorIndex | None = None


@dataclass(frozen=True)
class Client:
    id: str
    name: str
    rate_limit_per_minute: int | None
    #: The client's own decision policy (e.g. which accessories reject), stored on its record.
    policy: dict[str, Any] | None = None


def deps(request: Request) -> Deps:
    value = request.app.state.deps
    assert isinstance(value, Deps)
    return value


DepsDep = Annotated[Deps, Depends(deps)]


async def client(d: DepsDep, x_api_key: Annotated[str | None, Header()] = None) -> Client:
    if not x_api_key:
        raise ApiError("unauthorized")
    key_hash = apikeys.hash_key(x_api_key)
    found = await d.store.client_by_key_hash(key_hash)
    if found is None or not secrets.compare_digest(found["key_hash"], key_hash):
        raise ApiError("unauthorized", "The API key is not valid or has been revoked.")
    # Dashboards show client names by joining on this (labels on every series stay ids).
    metrics.CLIENT_INFO.labels(client=found["_id"], name=found["name"]).set(1)
    return Client(
        id=found["_id"],
        name=found["name"],
        rate_limit_per_minute=found.get("rate_limit_per_minute"),
        policy=found.get("policy"),
    )


ClientDep = Annotated[Client, Depends(client)]
WaitQuery = Annotated[
    float,
    Query(
        ge=0,
        le=300,
        description="Wait up to this many seconds (capped by the server's "
        "limit, 30 s by default) for the final result.",
    ),
]

ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ErrorBody,
        "description": ", ".join(e.code for e in codes.UPLOAD_ERRORS if e.http_status == status),
        **examples(error_examples(status)),
    }
    for status in sorted({e.http_status for e in codes.UPLOAD_ERRORS})
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The route's own error statuses, plus what any route can answer: 500 and 503 (a
    backing store failed) and, for a request with a body, 408 (sent too slowly)."""
    always = {500, 503}
    return {s: ERROR_RESPONSES[s] for s in sorted({*statuses, *always})}
