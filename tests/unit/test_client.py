"""The typed API clients (sync and async) against a scripted gateway (httpx.MockTransport)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.client import ApiError, AsyncFaceValClient, FaceValClient

Handler = Callable[[httpx.Request], httpx.Response]


def _pending(tid: str = "t1") -> dict[str, Any]:
    return {
        "transaction_id": tid,
        "status": "pending",
        "status_url": f"http://gw/v1/validations/{tid}",
    }


def _done(tid: str = "t1") -> dict[str, Any]:
    return {"transaction_id": tid, "status": "completed", "summary_reason": "accepted"}


class Script:
    """Answers each request with the next scripted response, and keeps the requests."""

    def __init__(self, *responses: httpx.Response) -> None:
        self.responses = list(responses)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        request.read()
        self.requests.append(request)
        return self.responses.pop(0)

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        return self.responses.pop(0)


def _sync(script: Script) -> FaceValClient:
    return FaceValClient("http://gw", "secret-key", transport=httpx.MockTransport(script))


def _async(script: Script) -> AsyncFaceValClient:
    return AsyncFaceValClient(
        "http://gw", "secret-key", transport=httpx.MockTransport(script.handle_async)
    )


def test_submit_sends_the_key_both_images_and_the_form_fields(tmp_path: Path) -> None:
    near = tmp_path / "me_near.PNG"
    near.write_bytes(b"near-bytes")
    script = Script(httpx.Response(200, json=_done()))
    with _sync(script) as api:
        result = api.submit(near, b"far-bytes", user_id="123", process_guid="g",
                            client_reference="ref-1", wait=5)  # fmt: skip
    assert result == _done()
    (request,) = script.requests
    assert request.method == "POST"
    assert request.url.path == "/v1/validations"
    assert request.url.params["wait"] == "5"
    assert request.headers["x-api-key"] == "secret-key"
    body = request.content
    assert b'name="near"; filename="near.png"\r\nContent-Type: image/png' in body
    assert b'name="far"; filename="far.jpg"\r\nContent-Type: image/jpeg' in body
    assert b"near-bytes" in body and b"far-bytes" in body
    for field, value in (
        ("user_id", b"123"),
        ("process_guid", b"g"),
        ("client_reference", b"ref-1"),
    ):
        assert f'name="{field}"'.encode() + b"\r\n\r\n" + value in body


def test_optional_fields_are_left_out_when_not_given() -> None:
    script = Script(httpx.Response(202, json=_pending()))
    with _sync(script) as api:
        assert api.submit(b"n", b"f", user_id="u")["status"] == "pending"
    assert b"process_guid" not in script.requests[0].content
    assert b"client_reference" not in script.requests[0].content


def test_an_error_answer_raises_with_the_api_code_message_and_retry_after() -> None:
    script = Script(
        httpx.Response(
            429,
            json={"code": "rate_limited", "message": "Slow down."},
            headers={"Retry-After": "7"},
        )
    )
    with _sync(script) as api, pytest.raises(ApiError) as caught:
        api.get("t1")
    assert (caught.value.status, caught.value.code, caught.value.message) == (
        429, "rate_limited", "Slow down.",
    )  # fmt: skip
    assert caught.value.retry_after == 7.0
    assert "HTTP 429: rate_limited: Slow down." in str(caught.value)


def test_a_non_json_error_page_still_raises_an_api_error() -> None:
    script = Script(httpx.Response(502, text="<html>Bad Gateway</html>"))
    with _sync(script) as api, pytest.raises(ApiError) as caught:
        api.get("t1")
    assert caught.value.status == 502
    assert caught.value.code == "http_error"
    assert "Bad Gateway" in caught.value.message
    assert caught.value.retry_after is None


def test_validate_polls_until_the_result_is_final() -> None:
    script = Script(
        httpx.Response(202, json=_pending()),
        httpx.Response(200, json=_pending()),
        httpx.Response(200, json=_done()),
    )
    with _sync(script) as api:
        assert api.validate(b"n", b"f", user_id="u", timeout=60) == _done()
    submit, *polls = script.requests
    assert submit.url.params["wait"] == "10.0"
    assert [p.url.path for p in polls] == ["/v1/validations/t1"] * 2
    assert all(0 < float(p.url.params["wait"]) <= 10 for p in polls)


def test_wait_result_gives_back_the_pending_state_when_time_is_up() -> None:
    script = Script(httpx.Response(200, json=_pending()))
    with _sync(script) as api:
        assert api.wait_result("t1", timeout=0) == _pending()
    assert len(script.requests) == 1


def test_codes_reads_the_catalogue() -> None:
    script = Script(httpx.Response(200, json={"summary_codes": [], "error_codes": []}))
    with _sync(script) as api:
        assert api.codes() == {"summary_codes": [], "error_codes": []}
    assert script.requests[0].url.path == "/v1/codes"


def test_the_async_client_submits_polls_and_raises_like_the_sync_one() -> None:
    script = Script(
        httpx.Response(202, json=_pending()),
        httpx.Response(200, json=_done()),
        httpx.Response(401, json={"code": "unauthorized", "message": "No key."}),
    )

    async def go() -> tuple[dict[str, Any], ApiError]:
        async with _async(script) as api:
            result = await api.validate(b"n", b"f", user_id="u", client_reference="r")
            try:
                await api.get("t2")
            except ApiError as exc:
                return result, exc
        raise AssertionError("no error raised")

    result, error = asyncio.run(go())
    assert result == _done()
    assert (error.status, error.code) == (401, "unauthorized")
    assert script.requests[0].headers["x-api-key"] == "secret-key"
    assert b'name="client_reference"\r\n\r\nr' in script.requests[0].content
    assert script.requests[1].url.path == "/v1/validations/t1"


def test_enroll_sends_every_image_under_images_and_the_external_id() -> None:
    created = {"subject_id": "s1", "external_id": "doc-1", "images_used": 2}
    script = Script(httpx.Response(201, json=created))
    with _sync(script) as api:
        assert api.enroll("doc-1", [b"one", b"two"]) == created
    body = script.requests[0].content
    assert script.requests[0].url.path == "/v1/subjects"
    assert body.count(b'name="images"') == 2 and b"doc-1" in body


def test_subject_calls_reach_their_routes_and_delete_raises_on_404() -> None:
    script = Script(
        httpx.Response(200, json={"match": True}),
        httpx.Response(200, json={"matches": []}),
        httpx.Response(200, json={"items": [], "next_after": None}),
        httpx.Response(204),
        httpx.Response(404, json={"code": "not_found", "message": "No such subject."}),
    )
    with _sync(script) as api:
        assert api.verify("s1", b"img")["match"] is True
        assert api.search(b"img", k=3)["matches"] == []
        assert api.list_subjects(limit=10, after="s0")["next_after"] is None
        api.delete_subject("s1")
        with pytest.raises(ApiError) as raised:
            api.delete_subject("s1")
    assert raised.value.code == "not_found"
    paths = [(r.method, r.url.path, r.url.query) for r in script.requests]
    assert paths[:3] == [
        ("POST", "/v1/subjects/s1/verify", b""),
        ("POST", "/v1/search", b"k=3"),
        ("GET", "/v1/subjects", b"limit=10&after=s0"),
    ]
    assert paths[3][:2] == ("DELETE", "/v1/subjects/s1")


def test_the_async_client_verifies_and_sends_identity_fields_on_submit() -> None:
    script = Script(httpx.Response(200, json={"match": False}), httpx.Response(200, json=_done()))

    async def go() -> None:
        async with _async(script) as api:
            assert (await api.verify("s1", b"img"))["match"] is False
            await api.submit(b"n", b"f", user_id="u", subject_id="s1", check_duplicates=True)

    asyncio.run(go())
    form = script.requests[1].content
    assert b'name="subject_id"' in form and b'name="check_duplicates"' in form
