"""A small typed client for the gateway's API (used by `faceval submit` and the demo)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status}: {body.get('code')}: {body.get('message')}")
        self.status = status
        self.body = body


class FaceValClient:
    def __init__(self, base_url: str, api_key: str, timeout: float = 60.0) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers={"X-API-Key": api_key}, timeout=timeout
        )

    def __enter__(self) -> FaceValClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(
        self,
        near: bytes | Path,
        far: bytes | Path,
        *,
        user_id: str,
        process_guid: str | None = None,
        client_reference: str | None = None,
        wait: float = 30.0,
    ) -> dict[str, Any]:
        """Submit a pair; with `wait`, returns the final result if it is ready in time."""
        files = {
            side: (f"{side}.jpg", data.read_bytes() if isinstance(data, Path) else data)
            for side, data in (("near", near), ("far", far))
        }
        form = {"user_id": user_id}
        if process_guid:
            form["process_guid"] = process_guid
        if client_reference:
            form["client_reference"] = client_reference
        response = self._http.post("/v1/validations", params={"wait": wait}, files=files, data=form)
        return self._body(response)

    def get(self, transaction_id: str, wait: float = 0.0) -> dict[str, Any]:
        response = self._http.get(f"/v1/validations/{transaction_id}", params={"wait": wait})
        return self._body(response)

    @staticmethod
    def _body(response: httpx.Response) -> dict[str, Any]:
        body = response.json()
        if response.status_code >= 400:
            raise ApiError(response.status_code, body)
        assert isinstance(body, dict)
        return body
