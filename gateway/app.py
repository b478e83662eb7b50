"""The FastAPI gateway: authenticate, check the upload, store images briefly, publish jobs."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from typing import Annotated, Any

from celery import Celery
from fastapi import Depends, FastAPI, File, Form, Header, Query, Request, Response, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.errors import (
    ApiError,
    api_error_handler,
    http_error_handler,
    validation_error_handler,
)
from gateway.limits import QueueDepthWatch, check_rate
from gateway.waiter import DoneWaiter
from shared import apikeys, codes, metrics, transactions
from shared.blobstore import AsyncBlobStore
from shared.imaging import CheckedImage, ImageRejected, inspect_upload
from shared.messaging import make_celery, publish_job
from shared.pipeline import STAGES
from shared.pseudonym import pseudonymise
from shared.results import to_result
from shared.schema import (
    Accepted,
    ErrorBody,
    StageJob,
    ValidationList,
    ValidationResult,
    ValidationSummary,
)
from shared.settings import Settings, get_settings
from shared.storage import PENDING, Doc, Store, expiry

log = logging.getLogger(__name__)

SERVICE = "POST /v1/validations"
FORM_FIELDS = {"near", "far", "user_id", "process_guid", "client_reference"}
PACKAGE_VERSION = version("faceval")
#: Multipart framing around two images and a few fields.
BODY_OVERHEAD_BYTES = 64 * 1024


@dataclass
class Deps:
    settings: Settings
    store: Store
    blobs: AsyncBlobStore
    celery: Celery
    waiter: DoneWaiter
    api_hash: str
    depth: QueueDepthWatch


@dataclass(frozen=True)
class Client:
    id: str
    name: str
    rate_limit_per_minute: int | None


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {
        "model": ErrorBody,
        "description": ", ".join(e.code for e in codes.UPLOAD_ERRORS if e.http_status == status),
    }
    for status in sorted({e.http_status for e in codes.UPLOAD_ERRORS})
}


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
    return Client(
        id=found["_id"],
        name=found["name"],
        rate_limit_per_minute=found.get("rate_limit_per_minute"),
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


def _catalogue_markdown() -> str:
    rows = "\n".join(
        f"| {s.code} | `{s.reason}` | {s.status} | {s.http_code} | {s.description} |"
        for s in codes.SUMMARIES
    )
    errors = "\n".join(
        f"| `{e.code}` | {e.http_status} | {e.message} |" for e in codes.UPLOAD_ERRORS
    )
    return (
        "Validates a near and a far selfie of one person through face detection, accessory,"
        " quality and presentation-attack stages; the first stage that rejects decides.\n\n"
        "### Summary codes\n| code | reason | status | http_code | meaning |\n"
        "|---|---|---|---|---|\n"
        f"{rows}\n\n### Error codes\n| code | HTTP | meaning |\n|---|---|---|\n{errors}\n"
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(settings.mongo_url, settings.mongo_db)
        blobs = AsyncBlobStore(settings.redis_url)
        await store.ensure_indexes(settings.retention_days)
        waiter = DoneWaiter(blobs.redis)
        await waiter.start()
        api_hash = hashlib.sha256(
            f"faceval {PACKAGE_VERSION} api {settings.api_version}".encode()
        ).hexdigest()[:12]
        depth = QueueDepthWatch(
            settings.broker_url, settings.queue_prefix, settings.queue_depth_poll_seconds
        )
        depth.start()
        app.state.deps = Deps(
            settings, store, blobs, make_celery(settings), waiter, api_hash, depth
        )
        sweeper = asyncio.create_task(_sweep_forever(store, blobs, settings))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await waiter.stop()
            await depth.stop()
            await blobs.close()
            store.close()

    app = FastAPI(
        title="FaceVal",
        version=PACKAGE_VERSION,
        description=_catalogue_markdown(),
        lifespan=lifespan,
    )
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    from gateway.demo.router import router as demo_router  # the page for trying the API

    app.include_router(demo_router)

    @app.middleware("http")
    async def limits_and_metrics(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        limit = 2 * settings.max_upload_bytes + BODY_OVERHEAD_BYTES
        if request.method == "POST" and length and length.isdigit() and int(length) > limit:
            # Refused before the body is read: nothing large is parsed or spooled.
            response: Response = JSONResponse(
                ErrorBody(
                    code="file_too_large", message=f"The request body is larger than {limit} bytes."
                ).model_dump(exclude_none=True),
                status_code=413,
            )
            metrics.UPLOADS_REJECTED_TOTAL.labels(code="file_too_large").inc()
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        metrics.HTTP_REQUEST_SECONDS.labels(
            method=request.method,
            route=getattr(route, "path", "unmatched"),
            status_code=str(response.status_code),
        ).observe(time.perf_counter() - started)
        return response

    @app.post(
        "/v1/validations",
        status_code=202,
        response_model=ValidationResult | Accepted,
        responses={
            200: {"model": ValidationResult, "description": "Finished within `wait`."},
            202: {"model": Accepted, "description": "Accepted; poll the status URL."},
            **ERROR_RESPONSES,
        },
        summary="Submit a near and a far selfie for validation",
    )
    async def submit(
        request: Request,
        d: DepsDep,
        who: ClientDep,
        near: Annotated[UploadFile, File(description="Selfie taken near the camera.")],
        far: Annotated[UploadFile, File(description="Selfie taken far from the camera.")],
        user_id: Annotated[
            str,
            Form(
                min_length=1, max_length=128, description="End user's identifier (document number)."
            ),
        ],
        process_guid: Annotated[
            str | None,
            Form(description="The client's agreement process GUID (procesoConvenioGuid)."),
        ] = None,
        client_reference: Annotated[str | None, Form(max_length=128)] = None,
        wait: WaitQuery = 0.0,
    ) -> Response:
        form = await request.form()
        repeated = sorted({k for k in form if len(form.getlist(k)) > 1} & FORM_FIELDS)
        if repeated:
            raise ApiError("invalid_field", f"Form field(s) sent more than once: {repeated}.")
        limit = who.rate_limit_per_minute or d.settings.rate_limit_per_minute
        retry_after = await check_rate(d.blobs.redis, who.id, limit)
        if retry_after is not None:
            raise ApiError(
                "rate_limited",
                f"At most {limit} validations a minute for this client.",
                headers={"Retry-After": str(retry_after)},
            )
        if d.depth.known and d.depth.depth > d.settings.max_queue_depth:
            raise ApiError("overloaded", headers={"Retry-After": "10"})
        if process_guid:
            try:
                process_guid = str(uuid.UUID(process_guid))
            except ValueError as exc:
                raise ApiError("invalid_field", "process_guid must be a GUID.") from exc
        checked: dict[str, CheckedImage] = {}
        data: dict[str, bytes] = {}
        for side, upload in (("near", near), ("far", far)):
            raw = await upload.read(d.settings.max_upload_bytes + 1)
            try:
                checked[side] = await run_in_threadpool(
                    inspect_upload,
                    raw,
                    max_bytes=d.settings.max_upload_bytes,
                    max_pixels=d.settings.max_image_pixels,
                    min_side=d.settings.min_image_side,
                )
            except ImageRejected as exc:
                raise ApiError(exc.code, f"{side}: {exc.message}", detail={"image": side}) from exc
            data[side] = raw
        tid = uuid.uuid4().hex
        secret = d.settings.pseudonym_secret.get_secret_value()
        doc = transactions.new_transaction(
            transaction_id=tid,
            client_id=who.id,
            client_name=who.name,
            user_name=pseudonymise(secret, "user", f"{who.id}:{user_id}"),
            documento=pseudonymise(secret, "document", user_id),
            process_guid=process_guid,
            client_reference=client_reference,
            service=SERVICE,
            api_hash=d.api_hash,
            images={
                s: {"width": c.width, "height": c.height, "format": c.format, "bytes": c.size_bytes}
                for s, c in checked.items()
            },
            expires_at=None,
            deadline_seconds=d.settings.transaction_deadline_seconds,
        )
        doc["expires_at"] = expiry(doc["created_at"], d.settings.retention_days)
        try:
            await d.blobs.put_images(tid, data, ttl=d.settings.image_ttl_seconds)
            await d.store.create_transaction(doc)
            await run_in_threadpool(_publish_first_stage, d.celery, tid)
        except Exception as exc:
            log.warning("could not queue %s: %s", tid, exc)
            # Not accepted, so not kept: the client was told to retry.
            with contextlib.suppress(Exception):
                await d.store.transactions.delete_one({"_id": tid, "status": PENDING})
                await d.blobs.delete_images(tid)
            raise ApiError("service_unavailable", headers={"Retry-After": "5"}) from exc
        status_url = str(request.url_for("get_validation", transaction_id=tid))
        return await _respond(
            d, tid, who, min(wait, d.settings.max_wait_seconds), status_url, created=True
        )

    @app.get(
        "/v1/validations/{transaction_id}",
        response_model=ValidationResult,
        responses={s: ERROR_RESPONSES[s] for s in (401, 404, 422)},
        summary="Get a validation's status and result",
    )
    async def get_validation(
        request: Request, transaction_id: str, d: DepsDep, who: ClientDep, wait: WaitQuery = 0.0
    ) -> Response:
        status_url = str(request.url_for("get_validation", transaction_id=transaction_id))
        wait = min(wait, d.settings.max_wait_seconds)
        return await _respond(d, transaction_id, who, wait, status_url, created=False)

    @app.get(
        "/v1/validations",
        response_model=ValidationList,
        responses={s: ERROR_RESPONSES[s] for s in (401, 422)},
        summary="List this client's most recent validations",
    )
    async def list_validations(
        d: DepsDep, who: ClientDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
    ) -> ValidationList:
        docs = await d.store.recent_client_transactions(who.id, limit)
        return ValidationList(
            items=[
                ValidationSummary(
                    transaction_id=doc["_id"],
                    status=doc["status"],
                    summary_code=doc.get("summary_code"),
                    summary_reason=doc.get("summary_reason"),
                    created_at=doc["created_at"],
                )
                for doc in docs
            ]
        )

    @app.get("/v1/codes", summary="The summary and error code catalogue")
    async def code_catalogue() -> dict[str, Any]:
        return {
            "summary_codes": [
                {
                    "code": s.code,
                    "reason": s.reason,
                    "status": str(s.status),
                    "http_code": s.http_code,
                    "description": s.description,
                }
                for s in codes.SUMMARIES
            ],
            "error_codes": [
                {"code": e.code, "http_status": e.http_status, "message": e.message}
                for e in codes.UPLOAD_ERRORS
            ],
        }

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(d: DepsDep) -> JSONResponse:
        checks: dict[str, str] = {}
        probes: dict[str, Callable[[], Awaitable[Any]]] = {
            "mongodb": d.store.ping,
            "redis": d.blobs.ping,
            "rabbitmq": lambda: run_in_threadpool(_broker_ping, d.celery),
        }
        for name, probe in probes.items():
            try:
                await asyncio.wait_for(probe(), timeout=3)
                checks[name] = "ok"
            except Exception as exc:
                checks[name] = f"unavailable: {type(exc).__name__}"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> PlainTextResponse:
        return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _publish_first_stage(celery: Celery, tid: str) -> None:
    for side in ("near", "far"):
        publish_job(celery, STAGES[0], StageJob(transaction_id=tid, image=side))


def _broker_ping(celery: Celery) -> None:
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)


async def _respond(
    d: Deps, tid: str, who: Client, wait: float, status_url: str, *, created: bool
) -> Response:
    doc: Doc | None
    if wait > 0:
        with d.waiter.watch(tid) as done:
            doc = await d.store.get_client_transaction(tid, who.id)
            if doc is not None and doc["status"] == PENDING:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout=wait)
                doc = await d.store.get_client_transaction(tid, who.id)
    else:
        doc = await d.store.get_client_transaction(tid, who.id)
    if doc is None:
        # Another client's transaction is indistinguishable from a missing one.
        raise ApiError("not_found")
    if doc["status"] == PENDING and created:
        body = Accepted(transaction_id=tid, status="pending", status_url=status_url)
        return JSONResponse(body.model_dump(), status_code=202, headers={"Location": status_url})
    result = to_result(doc, status_url)
    return JSONResponse(result.model_dump(mode="json"), status_code=200)


async def _sweep_forever(store: Store, blobs: AsyncBlobStore, settings: Settings) -> None:
    while True:
        await asyncio.sleep(settings.sweep_interval_seconds)
        try:
            swept = await transactions.sweep_stale(store, blobs)
            if swept:
                log.warning("swept %d stale transactions to timeout", swept)
        except Exception as exc:
            log.warning("sweep failed: %s", exc)
