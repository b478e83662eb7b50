"""API errors: every failure answers with a stable code and a sentence a person understands."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared import metrics
from shared.codes import UPLOAD_ERROR_BY_CODE
from shared.schema import ErrorBody


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
