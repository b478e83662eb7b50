"""POST/GET /v1/validations: submit a near/far pair, read one result, list recent ones."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Query, Request, Response, UploadFile

from gateway import identity_checks, submit
from gateway.deps import ClientDep, DepsDep, WaitQuery, error_responses
from gateway.errors import ApiError
from gateway.openapi_examples import accepted_example, examples, validation_examples
from shared.schema import Accepted, ValidationList, ValidationResult, ValidationSummary

router = APIRouter(tags=["validations"])


@router.post(
    "/v1/validations",
    status_code=202,
    response_model=ValidationResult | Accepted,
    responses={
        200: {
            "model": ValidationResult,
            "description": "Finished within `wait`.",
            **examples(validation_examples()),
        },
        202: {
            "model": Accepted,
            "description": "Accepted; poll the status URL.",
            **examples(accepted_example()),
        },
        **error_responses(400, 401, 404, 408, 413, 415, 422, 429),
    },
    summary="Submit a near and a far selfie for validation",
)
async def submit_validation(
    request: Request,
    d: DepsDep,
    who: ClientDep,
    near: Annotated[UploadFile, File(description="Selfie taken near the camera.")],
    far: Annotated[UploadFile, File(description="Selfie taken far from the camera.")],
    user_id: Annotated[
        str,
        Form(min_length=1, max_length=128, description="End user's identifier (document number)."),
    ],
    process_guid: Annotated[
        str | None,
        Form(description="The client's agreement process GUID (procesoConvenioGuid)."),
    ] = None,
    client_reference: Annotated[str | None, Form(max_length=128)] = None,
    subject_id: Annotated[
        str | None,
        Form(
            max_length=64,
            description="1:1: also say whether the face is this enrolled subject's "
            "(`identity_checks.subject` in the result).",
        ),
    ] = None,
    check_duplicates: Annotated[
        bool,
        Form(
            description="1:N: also search this client's subjects for the face under another "
            "external id than user_id (`identity_checks.duplicates`)."
        ),
    ] = False,
    wait: WaitQuery = 0.0,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias=submit.IDEMPOTENCY_HEADER,
            description="Makes retries safe: a retry with the same key (same client, same "
            "request, within the retention window) answers with the transaction the first "
            "request created instead of validating again.",
        ),
    ] = None,
) -> Response:
    form = await request.form()
    repeated = sorted({k for k in form if len(form.getlist(k)) > 1} & submit.FORM_FIELDS)
    if repeated:
        raise ApiError("invalid_field", f"Form field(s) sent more than once: {repeated}.")
    await submit.admit(d, who)
    asked = await identity_checks.requested(d, who, user_id, subject_id, check_duplicates)
    fields = submit.Submission(
        user_id, submit.normalised_guid(process_guid), client_reference, extra=asked
    )
    key = submit.idempotency_key(idempotency_key)
    images = await submit.read_images(d, {"near": near, "far": far})
    tid, _ = await submit.submit_once(d, who, fields, images, key)
    status_url = str(request.url_for("get_validation", transaction_id=tid))
    wait = min(wait, d.settings.max_wait_seconds)
    return await submit.respond(d, tid, who, wait, status_url, created=True)


@router.get(
    "/v1/validations/{transaction_id}",
    response_model=ValidationResult,
    responses={
        200: {
            "description": "The validation: `status` pending while stages run, then its result.",
            **examples(validation_examples()),
        },
        **error_responses(401, 404, 422),
    },
    summary="Get a validation's status and result",
)
async def get_validation(
    request: Request, transaction_id: str, d: DepsDep, who: ClientDep, wait: WaitQuery = 0.0
) -> Response:
    status_url = str(request.url_for("get_validation", transaction_id=transaction_id))
    wait = min(wait, d.settings.max_wait_seconds)
    return await submit.respond(d, transaction_id, who, wait, status_url, created=False)


@router.get(
    "/v1/validations",
    response_model=ValidationList,
    responses=error_responses(401, 422),
    summary="List this client's most recent validations",
)
async def list_validations(
    d: DepsDep, who: ClientDep, limit: Annotated[int, Query(ge=1, le=100)] = 20
) -> ValidationList:
    docs = await d.store.recent_client_transactions(who.id, limit)
    return ValidationList(
        items=[
            ValidationSummary(
                transaction_id=doc["_id"],
                status=doc["status"],
                summary_code=doc.get("summary_code"),
                summary_reason=doc.get("summary_reason"),
                created_at=doc["created_at"],
            )
            for doc in docs
        ]
    )
