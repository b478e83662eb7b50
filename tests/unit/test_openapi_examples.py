"""The examples /docs shows: real answers that still match the response models."""

from __future__ import annotations

import pytest

from gateway.app import create_app
from gateway.openapi_examples import VALIDATION_EXAMPLES, validation_result
from shared import codes
from shared.pipeline import STAGES
from shared.schema import ErrorBody, ValidationResult


@pytest.mark.parametrize("name", sorted(VALIDATION_EXAMPLES))
def test_every_example_result_validates_against_the_response_model(name: str) -> None:
    result = ValidationResult.model_validate(validation_result(name))
    assert result.status == "completed" and result.total_time_ms
    ran = [stage for stage in STAGES if result.stages.get(stage) is not None]
    if name == "accepted":
        assert (result.summary_status, result.summary_reason) == ("accepted", "accepted")
        assert ran == list(STAGES)  # every stage, both images
        assert result.liveness is not None and result.liveness.assessed
    else:
        # Early termination: the stage that rejected is the last one that ran.
        assert result.summary_status == "rejected" and result.decided_by == ran[-1]
        assert result.reasons and all(r.code for r in result.reasons)


def test_the_api_document_shows_the_examples_on_submission_and_polling() -> None:
    paths = create_app().openapi()["paths"]
    submit = paths["/v1/validations"]["post"]["responses"]
    poll = paths["/v1/validations/{transaction_id}"]["get"]["responses"]
    for responses in (submit, poll):
        examples = responses["200"]["content"]["application/json"]["examples"]
        assert set(examples) == set(VALIDATION_EXAMPLES)
    pending = submit["202"]["content"]["application/json"]["examples"]["pending"]["value"]
    assert pending["status"] == "pending" and pending["status_url"].endswith(
        pending["transaction_id"]
    )


def test_every_error_status_shows_one_body_per_catalogued_code() -> None:
    responses = create_app().openapi()["paths"]["/v1/validations"]["post"]["responses"]
    for status, response in responses.items():
        if not status.startswith(("4", "5")):
            continue
        examples = response["content"]["application/json"]["examples"]
        catalogued = {e.code for e in codes.UPLOAD_ERRORS if e.http_status == int(status)}
        assert set(examples) == catalogued, status
        for code, example in examples.items():
            assert ErrorBody.model_validate(example["value"]).code == code
