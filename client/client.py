"""Typed clients for the gateway's API: `FaceValClient` (sync) and `AsyncFaceValClient`.

Both have the same methods and return the API's JSON as dicts (see `shared.schema` for
their shape). The CLI, the batch runner and `faceval demo` use them::

    with FaceValClient("http://127.0.0.1:8000", key) as api:
        result = api.validate(Path("me_near.jpg"), Path("me_far.jpg"), user_id="12345678")

    async with AsyncFaceValClient("http://127.0.0.1:8000", key) as api:
        result = await api.validate(near_bytes, far_bytes, user_id="12345678")

Subjects (enrolled faces), 1:1 and 1:N::

    subject = api.enroll("12345678", [Path("id_photo.jpg")])
    api.verify(subject["subject_id"], Path("selfie.jpg"))   # {match, similarity, ...}
    api.search(Path("selfie.jpg"), k=5)                     # {matches: [...], ...}

An answer of 400 or more raises `ApiError`, carrying the API's `{code, message}` body.
"""

from __future__ import annotations

import mimetypes
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

#: How long one GET may hold the connection while polling; under the server's cap (30 s).
POLL_WAIT_SECONDS = 10.0


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any], retry_after: float | None = None) -> None:
        super().__init__(f"HTTP {status}: {body.get('code')}: {body.get('message')}")
        self.status = status
        self.body = body
        #: Seconds the server asked the client to wait before retrying (429, 503).
        self.retry_after = retry_after

    @property
    def code(self) -> str:
        return str(self.body.get("code", "http_error"))

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))


Image = bytes | Path


def _file(side: str, data: Image) -> tuple[str, bytes, str]:
    if isinstance(data, Path):
        # The server trusts the bytes, not the name; the type only helps proxies and logs.
        mime = mimetypes.guess_type(data.name)[0] or "application/octet-stream"
        return f"{side}{data.suffix.lower() or '.jpg'}", data.read_bytes(), mime
    return f"{side}.jpg", data, "image/jpeg"


def _form(
    user_id: str,
    process_guid: str | None,
    client_reference: str | None,
    subject_id: str | None = None,
    check_duplicates: bool = False,
) -> dict[str, str]:
    form = {"user_id": user_id}
    if process_guid:
        form["process_guid"] = process_guid
    if client_reference:
        form["client_reference"] = client_reference
    if subject_id:
        form["subject_id"] = subject_id
    if check_duplicates:
        form["check_duplicates"] = "true"
    return form


def _images(images: Sequence[Image]) -> list[tuple[str, tuple[str, bytes, str]]]:
    return [("images", _file(f"image{i + 1}", data)) for i, data in enumerate(images)]


def _no_content(response: httpx.Response) -> None:
    if response.status_code >= 400:
        _body(response)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _body(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        # A proxy's HTML error page or an empty answer: keep the {code, message} shape.
        body = {"code": "http_error", "message": response.text[:200] or response.reason_phrase}
    if not isinstance(body, dict):
        body = {"code": "http_error", "message": f"unexpected answer: {str(body)[:200]}"}
    if response.status_code >= 400:
        raise ApiError(response.status_code, body, _retry_after(response))
    return body


def is_final(result: dict[str, Any]) -> bool:
    return result.get("status") == "completed"


class FaceValClient:
    """Blocking client; one connection pool per instance, closed by `close()` or `with`."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 60.0,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._http = httpx.Client(
            base_url=base_url, headers={"X-API-Key": api_key}, timeout=timeout, transport=transport
        )

    def __enter__(self) -> FaceValClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def submit(
        self,
        near: Image,
        far: Image,
        *,
        user_id: str,
        process_guid: str | None = None,
        client_reference: str | None = None,
        wait: float = 30.0,
        subject_id: str | None = None,
        check_duplicates: bool = False,
    ) -> dict[str, Any]:
        """Submit a pair; with `wait`, returns the final result if it is ready in time,
        otherwise `{transaction_id, status: "pending", status_url}`."""
        files = {side: _file(side, data) for side, data in (("near", near), ("far", far))}
        form = _form(user_id, process_guid, client_reference, subject_id, check_duplicates)
        response = self._http.post("/v1/validations", params={"wait": wait}, files=files, data=form)
        return _body(response)

    def get(self, transaction_id: str, wait: float = 0.0) -> dict[str, Any]:
        """The validation's current state; with `wait`, held until it completes or `wait` ends."""
        response = self._http.get(f"/v1/validations/{transaction_id}", params={"wait": wait})
        return _body(response)

    def wait_result(self, transaction_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Poll until the validation completes or `timeout` passes; returns the last state."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            result = self.get(transaction_id, wait=max(0.0, min(POLL_WAIT_SECONDS, left)))
            if is_final(result) or left <= 0:
                return result

    def validate(
        self,
        near: Image,
        far: Image,
        *,
        user_id: str,
        process_guid: str | None = None,
        client_reference: str | None = None,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """Submit and wait for the final result (still "pending" if `timeout` passed)."""
        started = time.monotonic()
        result = self.submit(near, far, user_id=user_id, process_guid=process_guid,
                             client_reference=client_reference,
                             wait=min(POLL_WAIT_SECONDS, timeout))  # fmt: skip
        if is_final(result):
            return result
        left = timeout - (time.monotonic() - started)
        return self.wait_result(str(result["transaction_id"]), timeout=max(0.0, left))

    def codes(self) -> dict[str, Any]:
        """The summary and error code catalogue (`GET /v1/codes`)."""
        return _body(self._http.get("/v1/codes"))

    # --- subjects, 1:1, 1:N -----------------------------------------------------------------

    def enroll(self, external_id: str, images: Sequence[Image]) -> dict[str, Any]:
        """Enrol (or replace) the subject `external_id` from 1 to 3 images."""
        response = self._http.post(
            "/v1/subjects", data={"external_id": external_id}, files=_images(images)
        )
        return _body(response)

    def get_subject(self, subject_id: str) -> dict[str, Any]:
        return _body(self._http.get(f"/v1/subjects/{subject_id}"))

    def delete_subject(self, subject_id: str) -> None:
        """Erase the subject (its templates leave MongoDB and the search index)."""
        _no_content(self._http.delete(f"/v1/subjects/{subject_id}"))

    def list_subjects(self, limit: int = 50, after: str | None = None) -> dict[str, Any]:
        """One page: `{items, next_after}`; pass `next_after` as `after` for the next."""
        params: dict[str, Any] = {"limit": limit, **({"after": after} if after else {})}
        return _body(self._http.get("/v1/subjects", params=params))

    def verify(self, subject_id: str, image: Image) -> dict[str, Any]:
        """1:1: `{match, similarity, threshold, model, ...}`."""
        files = {"image": _file("image", image)}
        return _body(self._http.post(f"/v1/subjects/{subject_id}/verify", files=files))

    def search(self, image: Image, k: int = 5) -> dict[str, Any]:
        """1:N: `{matches: [{subject_id, external_id, similarity, match}], ...}`."""
        files = {"image": _file("image", image)}
        return _body(self._http.post("/v1/search", params={"k": k}, files=files))


class AsyncFaceValClient:
    """The same API on `httpx.AsyncClient`, for many pairs in flight at once."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        timeout: float = 60.0,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        max_connections: int = 100,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"X-API-Key": api_key},
            timeout=timeout,
            transport=transport,
            limits=httpx.Limits(max_connections=max_connections),
        )

    async def __aenter__(self) -> AsyncFaceValClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def submit(
        self,
        near: Image,
        far: Image,
        *,
        user_id: str,
        process_guid: str | None = None,
        client_reference: str | None = None,
        wait: float = 30.0,
        subject_id: str | None = None,
        check_duplicates: bool = False,
    ) -> dict[str, Any]:
        """See `FaceValClient.submit`. Files named by a Path are read here, synchronously:
        selfies are small, and that keeps the method simple."""
        files = {side: _file(side, data) for side, data in (("near", near), ("far", far))}
        form = _form(user_id, process_guid, client_reference, subject_id, check_duplicates)
        response = await self._http.post(
            "/v1/validations", params={"wait": wait}, files=files, data=form
        )
        return _body(response)

    async def get(self, transaction_id: str, wait: float = 0.0) -> dict[str, Any]:
        """See `FaceValClient.get`."""
        response = await self._http.get(f"/v1/validations/{transaction_id}", params={"wait": wait})
        return _body(response)

    async def wait_result(self, transaction_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """See `FaceValClient.wait_result`."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            result = await self.get(transaction_id, wait=max(0.0, min(POLL_WAIT_SECONDS, left)))
            if is_final(result) or left <= 0:
                return result

    async def validate(
        self,
        near: Image,
        far: Image,
        *,
        user_id: str,
        process_guid: str | None = None,
        client_reference: str | None = None,
        timeout: float = 120.0,
    ) -> dict[str, Any]:
        """See `FaceValClient.validate`."""
        started = time.monotonic()
        result = await self.submit(near, far, user_id=user_id, process_guid=process_guid,
                                   client_reference=client_reference,
                                   wait=min(POLL_WAIT_SECONDS, timeout))  # fmt: skip
        if is_final(result):
            return result
        left = timeout - (time.monotonic() - started)
        return await self.wait_result(str(result["transaction_id"]), timeout=max(0.0, left))

    async def codes(self) -> dict[str, Any]:
        """See `FaceValClient.codes`."""
        return _body(await self._http.get("/v1/codes"))

    # --- subjects, 1:1, 1:N -----------------------------------------------------------------

    async def enroll(self, external_id: str, images: Sequence[Image]) -> dict[str, Any]:
        """See `FaceValClient.enroll`."""
        response = await self._http.post(
            "/v1/subjects", data={"external_id": external_id}, files=_images(images)
        )
        return _body(response)

    async def get_subject(self, subject_id: str) -> dict[str, Any]:
        return _body(await self._http.get(f"/v1/subjects/{subject_id}"))

    async def delete_subject(self, subject_id: str) -> None:
        _no_content(await self._http.delete(f"/v1/subjects/{subject_id}"))

    async def list_subjects(self, limit: int = 50, after: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, **({"after": after} if after else {})}
        return _body(await self._http.get("/v1/subjects", params=params))

    async def verify(self, subject_id: str, image: Image) -> dict[str, Any]:
        files = {"image": _file("image", image)}
        return _body(await self._http.post(f"/v1/subjects/{subject_id}/verify", files=files))

    async def search(self, image: Image, k: int = 5) -> dict[str, Any]:
        files = {"image": _file("image", image)}
        return _body(await self._http.post("/v1/search", params={"k": k}, files=files))
