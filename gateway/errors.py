"""API errors: every failure answers with a stable code and a sentence a person understands."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kombu.exceptions import OperationalError as BrokerError
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared import metrics
from shared.codes import UPLOAD_ERROR_BY_CODE
from shared.schema import ErrorBody

log = logging.getLogger(__name__)

#: A backing store or the broker failing: the client may retry, so 503 with Retry-After.
STORE_ERRORS: tuple[type[Exception], ...] = (PyMongoError, RedisError, BrokerError, TimeoutError)
RETRY_AFTER_SECONDS = "5"


class ApiError(Exception):
    def __init__(
        self,
        code: str,
        message: str | None = None,
        *,
        detail: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        spec = UPLOAD_ERROR_BY_CODE[code]
        super().__init__(message or spec.message)
        self.code = code
        self.status = spec.http_status
        self.message = message or spec.message
        self.detail = detail
        self.headers = headers


def error_response(error: ApiError) -> JSONResponse:
    body = ErrorBody(code=error.code, message=error.message, detail=error.detail)
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=error.status, headers=error.headers
    )


async def api_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if exc.status < 500:
        metrics.UPLOADS_REJECTED_TOTAL.labels(code=exc.code).inc()
    return error_response(exc)


async def http_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """Routing errors (unknown paths, wrong methods) in the same shape as every other error."""
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    if code is None:
        body = ErrorBody(code="invalid_request", message=str(exc.detail))
        return JSONResponse(body.model_dump(exclude_none=True), status_code=exc.status_code)
    message = "No such resource." if code == "not_found" else None
    return error_response(ApiError(code, message))


async def validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    missing = [e for e in errors if e.get("type") == "missing"]
    fields = [".".join(str(p) for p in e.get("loc", ())[1:]) for e in (missing or errors)]
    code = "missing_field" if missing else "invalid_field"
    verb = "missing" if missing else "invalid"
    error = ApiError(code, f"Form field(s) {verb}: {', '.join(fields)}.", detail={"fields": fields})
    metrics.UPLOADS_REJECTED_TOTAL.labels(code=code).inc()
    return error_response(error)


async def store_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Redis, MongoDB or RabbitMQ failed wherever it happened (the API-key lookup, the rate
    limit, a read): 503 with Retry-After in the documented shape, never a plain 500."""
    log.warning("%s %s: backing service failed: %s: %s", request.method, request.url.path,
                type(exc).__name__, exc)  # fmt: skip
    return error_response(
        ApiError("service_unavailable", headers={"Retry-After": RETRY_AFTER_SECONDS})
    )


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """A bug: the client still gets JSON with a stable code; the traceback goes to the log."""
    log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
    return error_response(ApiError("internal_error"))


def add_error_handlers(app: FastAPI) -> None:
    """Every failure answers in the documented JSON shape."""
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    for error in STORE_ERRORS:
        app.add_exception_handler(error, store_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
