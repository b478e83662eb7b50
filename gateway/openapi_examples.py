"""The examples the OpenAPI document (and so /docs) shows for each response.

The validation results are real answers: `faceval demo --json` on the bundled sample pairs
(2026-11-26, commit 9b2c72e; only the status URL's host was changed); the subjects answers
too: LFW photos enrolled under made-up external ids, verified and searched through the
running stack (2026-11-26, commit ff8afe2). They are kept as JSON files in
`gateway/examples/`; unit tests check that each still validates against its response
model, so a schema change that breaks them fails the build. The error bodies are the error
catalogue's (`shared.codes.UPLOAD_ERRORS`), one example per code a status can carry.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.resources import files
from typing import Any

from shared import codes

#: name -> (the file in gateway/examples/, what the example shows).
VALIDATION_EXAMPLES: dict[str, tuple[str, str]] = {
    "accepted": (
        "validation_accepted.json",
        "Accepted: every stage passed both images (scores, times and models per stage)",
    ),
    "rejected_accessory": (
        "validation_rejected_sunglasses.json",
        "Rejected by the accessory stage (sunglasses): the later stages never ran",
    ),
    "rejected_no_face": (
        "validation_rejected_no_face.json",
        "Rejected by the face detector (no face in the near image)",
    ),
}


@cache
def validation_result(name: str) -> dict[str, Any]:
    """One stored example result, by its name in VALIDATION_EXAMPLES."""
    text = files("gateway").joinpath("examples", VALIDATION_EXAMPLES[name][0]).read_text()
    value: dict[str, Any] = json.loads(text)
    return value


@cache
def subject_answers() -> dict[str, dict[str, Any]]:
    """The stored subjects answers, by name (subject_created, subject, verification_match,
    verification_no_match, search_result)."""
    value: dict[str, dict[str, Any]] = json.loads(
        files("gateway").joinpath("examples", "subjects.json").read_text()
    )
    return value


def subject_example(name: str, summary: str) -> dict[str, dict[str, Any]]:
    return {name: {"summary": summary, "value": subject_answers()[name]}}


def subject_list_example() -> dict[str, dict[str, Any]]:
    """A page holding the one stored subject, the last page."""
    page = {"items": [subject_answers()["subject"]], "next_after": None}
    return {"last_page": {"summary": "The last page: next_after is null", "value": page}}


def examples(content: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A response's `content`, for FastAPI's `responses=` (merged with its model's schema)."""
    return {"content": {"application/json": {"examples": content}}}


def validation_examples() -> dict[str, dict[str, Any]]:
    return {
        name: {"summary": summary, "value": validation_result(name)}
        for name, (_, summary) in VALIDATION_EXAMPLES.items()
    }


def accepted_example() -> dict[str, dict[str, Any]]:
    """The 202 answer to a submission still running: where to poll."""
    result = validation_result("accepted")
    value = {k: result[k] for k in ("transaction_id", "status_url")} | {"status": "pending"}
    return {"pending": {"summary": "Still running: poll status_url", "value": value}}


def error_examples(status: int) -> dict[str, dict[str, Any]]:
    """One body per error code answered with `status`."""
    return {
        error.code: {
            "summary": error.message,
            "value": {"code": error.code, "message": error.message, "detail": None},
        }
        for error in codes.UPLOAD_ERRORS
        if error.http_status == status
    }
