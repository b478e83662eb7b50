"""/docs works offline and the OpenAPI schema declares the API key as a security scheme."""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Header
from fastapi.testclient import TestClient

from gateway.docs import API_KEY_HEADER, SCHEME, install_offline_docs


def _app() -> FastAPI:
    app = FastAPI(title="FaceVal")

    @app.get("/v1/things")
    async def things(x_api_key: Annotated[str | None, Header()] = None) -> dict[str, str]:
        return {"key": x_api_key or ""}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    install_offline_docs(app)
    return app


def test_the_docs_page_loads_swagger_ui_from_this_server_not_a_cdn() -> None:
    client = TestClient(_app())
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn.jsdelivr.net" not in page.text and "unpkg.com" not in page.text
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css"):
        assert asset in page.text
        served = client.get(asset)
        assert served.status_code == 200 and len(served.content) > 10_000, asset
    assert client.get("/redoc").status_code == 404, "redoc needs a CDN: not served"


def test_the_api_key_is_a_security_scheme_on_the_operations_that_need_it() -> None:
    schema = TestClient(_app()).get("/openapi.json").json()
    scheme = schema["components"]["securitySchemes"][SCHEME]
    assert scheme == {**scheme, "type": "apiKey", "in": "header", "name": API_KEY_HEADER}
    keyed = schema["paths"]["/v1/things"]["get"]
    assert keyed["security"] == [{SCHEME: []}]
    assert not any(p["name"].lower() == "x-api-key" for p in keyed.get("parameters", []))
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_the_header_still_reaches_the_endpoint() -> None:
    response = TestClient(_app()).get("/v1/things", headers={API_KEY_HEADER: "k-123"})
    assert response.json() == {"key": "k-123"}
