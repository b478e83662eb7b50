"""/docs without the internet: Swagger UI served from the installed package, and the API key
declared as an OpenAPI security scheme (the Authorize button; generated clients send it).

FastAPI's own /docs page loads Swagger UI from a CDN, so it is blank offline. Call
`install_offline_docs(app)` once after the routers are included: it replaces /docs (and
drops /redoc, which also needs a CDN) with a page whose script and style come from
`swagger-ui-bundle-v2` (Apache-2.0, Swagger UI 5: renders OpenAPI 3.1).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import BaseRoute, Mount, Route
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

DOCS_URL = "/docs"
ASSETS_URL = "/docs/assets"
#: The header the API reads the key from (gateway/deps.py: `x_api_key: Header()`).
API_KEY_HEADER = "X-API-Key"
SCHEME = "ApiKeyAuth"
_REPLACED = {"/docs", "/docs/oauth2-redirect", "/redoc"}


def _is_replaced(route: BaseRoute) -> bool:
    return isinstance(route, Route | Mount) and route.path in _REPLACED


def _is_key_header(parameter: dict[str, Any]) -> bool:
    return bool(parameter.get("in") == "header" and
                str(parameter.get("name", "")).lower() == API_KEY_HEADER.lower())  # fmt: skip


def with_api_key_scheme(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with the key as a security scheme instead of a plain header parameter."""
    components = schema.setdefault("components", {})
    components.setdefault("securitySchemes", {})[SCHEME] = {
        "type": "apiKey",
        "in": "header",
        "name": API_KEY_HEADER,
        "description": "The API key `faceval client create NAME` printed once.",
    }
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            parameters = operation.get("parameters", [])
            keyed = [p for p in parameters if _is_key_header(p)]
            if not keyed:
                continue
            operation["parameters"] = [p for p in parameters if p not in keyed]
            if not operation["parameters"]:
                del operation["parameters"]
            operation["security"] = [{SCHEME: []}]
    return schema


def install_offline_docs(app: FastAPI) -> None:
    """Serve /docs from local assets and declare the API key scheme in /openapi.json."""
    app.router.routes[:] = [r for r in app.router.routes if not _is_replaced(r)]
    app.docs_url = DOCS_URL
    app.redoc_url = None
    app.mount(ASSETS_URL, StaticFiles(directory=swagger_ui_path), name="swagger-ui-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=openapi_url,
            title=f"{app.title} API",
            swagger_js_url=f"{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_URL}/favicon-32x32.png",
            oauth2_redirect_url=f"{DOCS_URL}/oauth2-redirect",
            swagger_ui_parameters={"persistAuthorization": True},
        )

    async def oauth2_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    app.add_api_route(DOCS_URL, docs, include_in_schema=False)
    app.add_api_route(f"{DOCS_URL}/oauth2-redirect", oauth2_redirect, include_in_schema=False)

    build_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = with_api_key_scheme(build_schema())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
