"""The code catalogue, health, readiness and Prometheus metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from celery import Celery
from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from gateway.deps import DepsDep
from shared import codes

router = APIRouter()


@router.get("/v1/codes", summary="The summary and error code catalogue", tags=["codes"])
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


@router.get("/healthz", include_in_schema=False)
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", include_in_schema=False)
async def readyz(d: DepsDep) -> JSONResponse:
    checks: dict[str, str] = {}
    probes: dict[str, Callable[[], Awaitable[Any]]] = {
        "mongodb": d.store.ping,
        "redis": d.blobs.ping,
        "rabbitmq": lambda: run_in_threadpool(broker_ping, d.celery),
    }
    for name, probe in probes.items():
        try:
            await asyncio.wait_for(probe(), timeout=3)
            checks[name] = "ok"
        except Exception as exc:
            checks[name] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics() -> PlainTextResponse:
    return PlainTextResponse(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def broker_ping(celery: Celery) -> None:
    with celery.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
