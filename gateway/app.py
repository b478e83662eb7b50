"""The FastAPI gateway, assembled: clients built once, error mapping, limits, routers."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib.metadata import version

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from gateway.bodyguard import BodyGuard
from gateway.deps import Deps
from gateway.docs import install_offline_docs
from gateway.errors import add_error_handlers
from gateway.limits import QueueDepthWatch
from gateway.sweeper import sweep_forever
from gateway.waiter import DoneWaiter
from shared import codes, metrics
from shared.blobstore import AsyncBlobStore
from shared.messaging import make_celery
from shared.schema import ErrorBody
from shared.settings import Settings, get_settings
from shared.storage import Store

log = logging.getLogger(__name__)

PACKAGE_VERSION = version("faceval")
#: Multipart framing around two images and a few fields.
BODY_OVERHEAD_BYTES = 64 * 1024
#: The most files one request carries: an enrolment's three images (a validation has two).
MAX_FILES_PER_REQUEST = 3


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
        " quality, identity and presentation-attack stages; the first stage that rejects"
        " decides.\n\n"
        "### Summary codes\n| code | reason | status | http_code | meaning |\n"
        "|---|---|---|---|---|\n"
        f"{rows}\n\n### Error codes\n| code | HTTP | meaning |\n|---|---|---|\n{errors}\n"
    )


def api_hash(settings: Settings) -> str:
    text = f"faceval {PACKAGE_VERSION} api {settings.api_version}"
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = Store(settings.mongo_url, settings.mongo_db)
        blobs = AsyncBlobStore(settings.redis_url)
        await store.ensure_indexes(settings.retention_days)
        waiter = DoneWaiter(blobs.redis)
        await waiter.start()
        depth = QueueDepthWatch(
            settings.broker_url, settings.queue_prefix, settings.queue_depth_poll_seconds
        )
        depth.start()
        app.state.deps = Deps(
            settings, store, blobs, make_celery(settings), waiter, api_hash(settings), depth
        )
        sweeper = asyncio.create_task(sweep_forever(store, blobs, settings))
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
    add_error_handlers(app)

    from gateway.demo.router import router as demo_router  # the page for trying the API
    from gateway.routes import ops, subjects, validations

    app.include_router(validations.router)
    app.include_router(subjects.router)
    app.include_router(ops.router)
    app.include_router(demo_router)
    install_offline_docs(app)  # /docs from local assets; the API key as a security scheme

    @app.middleware("http")
    async def limits_and_metrics(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        limit = MAX_FILES_PER_REQUEST * settings.max_upload_bytes + BODY_OVERHEAD_BYTES
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

    # Outermost: counts body bytes as they arrive (chunked too) and bounds the time to read.
    app.add_middleware(
        BodyGuard,
        max_bytes=MAX_FILES_PER_REQUEST * settings.max_upload_bytes + BODY_OVERHEAD_BYTES,
        timeout=settings.body_read_timeout_seconds,
    )
    return app
