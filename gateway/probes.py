"""A face template for the subjects API, computed by the workers, never here.

An image to enrol, verify or search with is a probe transaction: checked like a
validation's upload, stored as both near and far (so the pipeline's pair rules hold),
run by the workers through detection, accessories, quality and identity (`until`), and
deleted at finalisation as always. The gateway waits for it and reads the near image's
template from `stages.identity.near.embedding`.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from gateway import submit
from gateway.deps import Client, Deps
from gateway.errors import ApiError
from shared.storage import PENDING, Doc
from shared.vectors import Vector, space_of, unit

UNTIL = "identity"


@dataclass(frozen=True)
class Template:
    model: str
    version: str
    vector: Vector
    transaction_id: str

    @property
    def space(self) -> str:
        return space_of(self.model, self.version)


async def template_of(
    d: Deps, who: Client, image: submit.Upload, *, service: str, label: str, user_id: str = ""
) -> Template:
    """The image's face template; 422 unusable_image when the pipeline rejects it, 503
    when it cannot tell in time."""
    form = submit.Submission(user_id, None, None, service=service, until=UNTIL)
    tid = await submit.create_validation(d, who, form, {"near": image, "far": image})
    doc = await _finished(d, who, tid, d.settings.identity_probe_timeout_seconds)
    if doc is None or doc["status"] == PENDING:
        raise ApiError(
            "service_unavailable",
            f"{label}: the face template was not ready in time; retry later.",
            detail={"image": label, "transaction_id": tid},
            headers={"Retry-After": "5"},
        )
    if doc.get("summary_status") == "rejected":
        raise ApiError(
            "unusable_image",
            f"{label}: {doc.get('summary_desc') or doc.get('summary_reason')}",
            detail={"image": label, "reason": doc.get("summary_reason"),
                    "summary_code": doc.get("summary_code"), "decided_by": doc.get("decided_by"),
                    "transaction_id": tid},
        )  # fmt: skip
    embedding = ((doc.get("stages") or {}).get(UNTIL) or {}).get("near", {}).get("embedding")
    if doc.get("summary_status") != "accepted" or not embedding:
        # An internal error, a timeout, or an identity worker without its model.
        raise ApiError(
            "service_unavailable",
            f"{label}: no face template could be computed ({doc.get('summary_reason')}).",
            detail={"image": label, "transaction_id": tid},
            headers={"Retry-After": "5"},
        )
    return Template(
        str(embedding["model"]), str(embedding["version"]), unit(embedding["vector"]), tid
    )


async def _finished(d: Deps, who: Client, tid: str, timeout: float) -> Doc | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    with d.waiter.watch(tid) as done:
        while True:
            done.clear()  # before the read: a `done` arriving after it still wakes us
            doc = await d.store.get_client_transaction(tid, who.id)
            left = deadline - loop.time()
            if doc is None or doc["status"] != PENDING or left <= 0:
                return doc
            # Re-read now and then as well: a lost `done` message costs a second, not all.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=min(left, 1.0))


async def templates_of(
    d: Deps, who: Client, images: dict[str, submit.Upload], *, service: str, user_id: str = ""
) -> list[Template]:
    """Several images' templates at once (enrolment), in the order given."""
    return list(
        await asyncio.gather(
            *(template_of(d, who, upload, service=service, label=label, user_id=user_id)
              for label, upload in images.items())
        )
    )  # fmt: skip
