"""The examples /docs shows: real answers that still match the response models."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

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


def test_the_subjects_answers_validate_and_are_shown_on_their_routes() -> None:
    from gateway.openapi_examples import subject_answers
    from shared.schema import SearchResult, Subject, SubjectCreated, SubjectList, Verification

    answers = subject_answers()
    created = SubjectCreated.model_validate(answers["subject_created"])
    subject = Subject.model_validate(answers["subject"])
    assert subject.subject_id == created.subject_id
    match = Verification.model_validate(answers["verification_match"])
    other = Verification.model_validate(answers["verification_no_match"])
    # Real scores: the same person above the threshold, another person below it.
    assert match.match and match.similarity >= match.threshold
    assert not other.match and other.similarity < other.threshold
    found = SearchResult.model_validate(answers["search_result"])
    assert found.matches and all(m.similarity >= found.floor for m in found.matches)
    paths = create_app().openapi()["paths"]
    shown: dict[tuple[str, str, str], type[BaseModel]] = {
        ("/v1/subjects", "post", "201"): SubjectCreated,
        ("/v1/subjects", "get", "200"): SubjectList,
        ("/v1/subjects/{subject_id}", "get", "200"): Subject,
        ("/v1/subjects/{subject_id}/verify", "post", "200"): Verification,
        ("/v1/search", "post", "200"): SearchResult,
    }
    for (path, method, status), model in shown.items():
        content = paths[path][method]["responses"][status]["content"]["application/json"]
        assert content["examples"], path
        for example in content["examples"].values():
            model.model_validate(example["value"])
