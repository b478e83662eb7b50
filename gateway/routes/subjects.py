"""Subjects (enrolled faces, stored as templates), 1:1 verification and 1:N search.

Every image here is a probe transaction through the workers (gateway/probes.py): the
gateway never runs a model. Subjects belong to the calling client: another client's
subject is indistinguishable from a missing one (404).
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile

from gateway import gallery, submit
from gateway.deps import Client, ClientDep, Deps, DepsDep, error_responses
from gateway.errors import ApiError
from gateway.openapi_examples import examples, subject_example, subject_list_example
from gateway.probes import Template, template_of, templates_of
from shared import metrics
from shared.pipeline import Policy
from shared.schema import (
    SearchMatch,
    SearchResult,
    Subject,
    SubjectCreated,
    SubjectList,
    Verification,
)
from shared.storage import Doc
from shared.vectors import cosine, mean_template, unit

router = APIRouter(tags=["subjects"])

MAX_IMAGES = 3
NOT_FOUND = "No such subject for this client."


def _threshold(d: Deps, who: Client) -> float:
    return Policy.build(d.settings, who.id, who.policy).thresholds["identity"]


def _subject(doc: Doc) -> Subject:
    return Subject(
        subject_id=doc["_id"],
        external_id=doc["external_id"],
        images_used=int(doc["images_used"]),
        model=doc["template"]["model"],
        model_version=doc["template"]["version"],
        created_at=doc["created_at"],
        updated_at=doc["updated_at"],
    )


async def _one_image(d: Deps, who: Client, image: UploadFile, service: str) -> Template:
    await submit.admit(d, who)
    uploads = await submit.read_images(d, {"image": image})
    return await template_of(d, who, uploads["image"], service=service, label="image")


@router.post(
    "/v1/subjects",
    status_code=201,
    response_model=SubjectCreated,
    responses={
        201: examples(subject_example("subject_created", "Enrolled from two photos")),
        **error_responses(400, 401, 408, 413, 415, 422, 429),
    },
    summary="Enrol a subject (or replace its template) from 1 to 3 images",
)
async def enrol(
    d: DepsDep,
    who: ClientDep,
    external_id: Annotated[
        str,
        Form(
            min_length=1,
            max_length=128,
            description="Your own id for the person (e.g. a document number).",
        ),
    ],
    images: Annotated[
        list[UploadFile], File(description="1 to 3 photos of the person, one face each.")
    ],
) -> SubjectCreated:
    if not 1 <= len(images) <= MAX_IMAGES:
        raise ApiError("invalid_field", f"Send 1 to {MAX_IMAGES} images, not {len(images)}.")
    await submit.admit(d, who)
    uploads = await submit.read_images(
        d, {f"image {i + 1}": image for i, image in enumerate(images)}
    )
    templates = await templates_of(
        d, who, uploads, service="POST /v1/subjects", user_id=external_id
    )
    if len({t.space for t in templates}) != 1:
        # Workers mid-upgrade answered with two models: nothing comparable to average.
        raise ApiError("service_unavailable", "Face models are being upgraded; retry later.",
                       headers={"Retry-After": "30"})  # fmt: skip
    first = templates[0]
    template = mean_template([t.vector for t in templates])

    def as_dict(vector: Any) -> dict[str, Any]:
        return {"model": first.model, "version": first.version,
                "vector": [round(float(v), 6) for v in vector]}  # fmt: skip

    fields = {
        "template": as_dict(template),
        # Per image, for auditing: which probe transaction made which template.
        "images": [{**as_dict(t.vector), "transaction_id": t.transaction_id} for t in templates],
        "images_used": len(templates),
        "model": first.model,
        "model_version": first.version,
    }
    doc, created = await d.store.put_subject(who.id, external_id, uuid.uuid4().hex, fields)
    await gallery.enrolled(d, who.id, str(doc["_id"]), external_id, template, first.space)
    return SubjectCreated(
        subject_id=doc["_id"],
        external_id=external_id,
        images_used=len(templates),
        model=first.model,
        model_version=first.version,
        replaced=not created,
    )


@router.get(
    "/v1/subjects",
    response_model=SubjectList,
    responses={200: examples(subject_list_example()), **error_responses(401, 422)},
    summary="List this client's subjects, by subject id",
)
async def list_subjects(
    d: DepsDep,
    who: ClientDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    after: Annotated[
        str | None, Query(max_length=64, description="The last page's next_after.")
    ] = None,
) -> SubjectList:
    docs = await d.store.list_subjects(who.id, limit, after)
    return SubjectList(
        items=[_subject(doc) for doc in docs],
        next_after=str(docs[-1]["_id"]) if len(docs) == limit else None,
    )


@router.get(
    "/v1/subjects/{subject_id}",
    response_model=Subject,
    responses={200: examples(subject_example("subject", "A subject")), **error_responses(401, 404)},
    summary="Get a subject (its template is never returned)",
)
async def get_subject(subject_id: str, d: DepsDep, who: ClientDep) -> Subject:
    doc = await d.store.get_subject(who.id, subject_id)
    if doc is None:
        raise ApiError("not_found", NOT_FOUND)
    return _subject(doc)


@router.delete(
    "/v1/subjects/{subject_id}",
    status_code=204,
    responses=error_responses(401, 404),
    summary="Erase a subject: its templates leave MongoDB and the index",
)
async def delete_subject(subject_id: str, d: DepsDep, who: ClientDep) -> Response:
    if not await d.store.delete_subject(who.id, subject_id):
        raise ApiError("not_found", NOT_FOUND)
    await gallery.erased(d, who.id, subject_id)
    return Response(status_code=204)


@router.post(
    "/v1/subjects/{subject_id}/verify",
    response_model=Verification,
    responses={
        200: examples(
            subject_example("verification_match", "Another photo of the subject: a match")
            | subject_example("verification_no_match", "Another person: no match")
        ),
        **error_responses(400, 401, 404, 408, 409, 413, 415, 422, 429),
    },
    summary="1:1: is the face in this image the subject?",
)
async def verify(
    subject_id: str,
    d: DepsDep,
    who: ClientDep,
    image: Annotated[UploadFile, File(description="A photo with one face.")],
) -> Verification:
    # Refused before the probe: an unknown subject costs no pipeline run.
    if await d.store.get_subject(who.id, subject_id) is None:
        raise ApiError("not_found", NOT_FOUND)
    probe = await _one_image(d, who, image, "POST /v1/subjects/{id}/verify")
    started = time.perf_counter()
    doc = await d.store.get_subject(who.id, subject_id)
    if doc is None:  # erased while the probe ran
        raise ApiError("not_found", NOT_FOUND)
    template = doc["template"]
    if (template["model"], template["version"]) != (probe.model, probe.version):
        raise ApiError(
            "needs_reenrollment",
            detail={"subject_model": f"{template['model']}/{template['version']}",
                    "active_model": probe.space},
        )  # fmt: skip
    similarity = round(cosine(probe.vector, unit(template["vector"])), 6)
    threshold = _threshold(d, who)
    metrics.IDENTITY_VERIFY_SECONDS.observe(time.perf_counter() - started)
    return Verification(
        subject_id=subject_id,
        match=similarity >= threshold,
        similarity=similarity,
        threshold=threshold,
        model=probe.model,
        model_version=probe.version,
    )


@router.post(
    "/v1/search",
    response_model=SearchResult,
    responses={
        200: examples(subject_example("search_result", "One subject above the floor: a match")),
        **error_responses(400, 401, 408, 413, 415, 422, 429),
    },
    summary="1:N: this client's subjects most similar to the face, best first",
)
async def search(
    d: DepsDep,
    who: ClientDep,
    image: Annotated[UploadFile, File(description="A photo with one face.")],
    k: Annotated[int, Query(ge=1, le=100)] = 5,
) -> SearchResult:
    probe = await _one_image(d, who, image, "POST /v1/search")
    floor = d.settings.identity_search_floor
    threshold = _threshold(d, who)
    found = await gallery.search(d, who.id, probe.vector, probe.space, k, floor)
    return SearchResult(
        matches=[
            SearchMatch(
                subject_id=m.subject_id,
                external_id=m.external_id,
                similarity=m.similarity,
                match=m.similarity >= threshold,
            )
            for m in found
        ],
        threshold=threshold,
        floor=floor,
        model=probe.model,
        model_version=probe.version,
    )
