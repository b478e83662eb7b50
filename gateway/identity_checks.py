"""A validation's optional identity questions: is this face the enrolled subject
(`subject_id`, 1:1), and does it match a subject enrolled under another identity
(`check_duplicates`, 1:N)?

Asked at submission (stored on the transaction), answered once when the finished result
is first read, and stored with a conditional write: the answer stands as of that moment
even if the gallery changes later. The probe template is the renormalised mean of the
near and far templates (the identity stage has just found them to be one person).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from gateway import gallery
from gateway.deps import Client, Deps
from gateway.errors import ApiError
from shared import metrics
from shared.pipeline import Policy
from shared.pseudonym import pseudonymise
from shared.storage import COMPLETED, Doc
from shared.vectors import cosine, mean_template, space_of, unit

#: How many matching subjects a duplicate check reports.
DUPLICATE_CANDIDATES = 5


def external_key(d: Deps, client_id: str, external_id: str) -> str:
    """The keyed hash a validation's user_id is stored as, to compare with external ids."""
    secret = d.settings.pseudonym_secret.get_secret_value()
    return pseudonymise(secret, "external", f"{client_id}:{external_id}")


async def requested(
    d: Deps, who: Client, user_id: str, subject_id: str | None, check_duplicates: bool
) -> dict[str, Any]:
    """The transaction fields for the questions asked (none: no fields)."""
    if not subject_id and not check_duplicates:
        return {}
    if subject_id and await d.store.get_subject(who.id, subject_id) is None:
        raise ApiError("not_found", "No such subject for this client.")
    return {
        "identity_request": {
            "subject_id": subject_id or None,
            "check_duplicates": check_duplicates,
            "user_key": external_key(d, who.id, user_id),
        }
    }


def _probe(doc: Mapping[str, Any]) -> tuple[str, str, Any] | None:
    """(model, version, vector) of the pair, when the identity stage passed."""
    stage = (doc.get("stages") or {}).get("identity") or {}
    if (stage.get("decision") or {}).get("outcome") != "pass":
        return None
    templates = [(stage.get(side) or {}).get("embedding") for side in ("near", "far")]
    if not all(templates):
        return None
    near, far = templates
    assert near is not None and far is not None
    if (near["model"], near["version"]) != (far["model"], far["version"]):
        return None
    return str(near["model"]), str(near["version"]), mean_template([near["vector"], far["vector"]])


async def settle_identity_checks(d: Deps, who: Client, doc: Doc) -> Doc:
    """The document with its `identity_checks`, computed and stored now if due."""
    request = doc.get("identity_request")
    if not request or doc.get("identity_checks") or doc.get("status") != COMPLETED:
        return doc
    threshold = Policy.build(d.settings, who.id, who.policy).thresholds["identity"]
    probe = _probe(doc)
    checks: dict[str, Any] = {"assessed": probe is not None}
    if probe is not None:
        model, version, vector = probe
        checks |= {"model": model, "model_version": version}
        if request.get("subject_id"):
            checks["subject"] = await _subject_check(
                d, who, str(request["subject_id"]), model, version, vector, threshold
            )
        if request.get("check_duplicates"):
            checks["duplicates"] = await _duplicate_check(
                d, who, str(request["user_key"]), space_of(model, version), vector, threshold
            )
    return await d.store.record_identity_checks(str(doc["_id"]), checks)


async def _subject_check(d: Deps, who: Client, subject_id: str, model: str, version: str,
                         vector: Any, threshold: float) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    subject = await d.store.get_subject(who.id, subject_id)
    if subject is None:
        return {"subject_id": subject_id, "found": False}
    template = subject["template"]
    if (template["model"], template["version"]) != (model, version):
        return {"subject_id": subject_id, "found": True, "needs_reenrollment": True}
    similarity = cosine(vector, template["vector"])
    metrics.IDENTITY_VERIFY_SECONDS.observe(time.perf_counter() - started)
    return {"subject_id": subject_id, "found": True, "match": similarity >= threshold,
            "similarity": round(similarity, 6), "threshold": threshold}  # fmt: skip


async def _duplicate_check(d: Deps, who: Client, user_key: str, space: str, vector: Any,
                           threshold: float) -> dict[str, Any]:  # fmt: skip
    matches = await gallery.search(d, who.id, unit(vector), space, DUPLICATE_CANDIDATES,
                                   threshold)  # fmt: skip
    others = [m for m in matches if external_key(d, who.id, m.external_id) != user_key]
    return {
        "possible_duplicate": bool(others),
        "subject_ids": [m.subject_id for m in others],
        "matches": [{"subject_id": m.subject_id, "similarity": m.similarity} for m in matches],
        "threshold": threshold,
    }
