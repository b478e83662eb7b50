"""Stable codes: the summary catalogue of a finished validation and the upload errors.

These numbers and names are a public contract (docs, OpenAPI, analysts' data): add new
ones, never renumber.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SummaryStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    ERROR = "error"


@dataclass(frozen=True)
class Summary:
    code: int
    status: SummaryStatus
    reason: str
    description: str
    http_code: int


_S = SummaryStatus
SUMMARIES: tuple[Summary, ...] = (
    Summary(0, _S.ACCEPTED, "accepted", "Valid, live, unobstructed face of good quality.", 200),
    Summary(10, _S.REJECTED, "no_face", "No face was found in the image.", 200),
    Summary(11, _S.REJECTED, "multiple_faces", "More than one face is in the image.", 200),
    Summary(12, _S.REJECTED, "face_too_small", "The face is too small in the image.", 200),
    Summary(13, _S.REJECTED, "face_cut_off", "The face is cut off by the image border.", 200),
    Summary(14, _S.REJECTED, "head_pose", "The head is turned too far from the camera.", 200),
    Summary(21, _S.REJECTED, "face_mask", "A face mask covers the nose or mouth.", 200),
    Summary(22, _S.REJECTED, "sunglasses", "Sunglasses cover the eyes.", 200),
    Summary(23, _S.REJECTED, "hat", "A hat or head covering hides the brows.", 200),
    Summary(24, _S.REJECTED, "glasses", "Glasses are not allowed by this client's policy.", 200),
    Summary(20, _S.REJECTED, "accessory_detected", "An accessory covers the face.", 200),
    Summary(30, _S.REJECTED, "low_quality", "The image quality is too low.", 200),
    Summary(40, _S.REJECTED, "spoof_detected", "A presentation attack was detected.", 200),
    Summary(50, _S.REJECTED, "face_mismatch", "Near and far images show different people.", 200),
    Summary(90, _S.ERROR, "timeout", "The validation did not finish in time.", 504),
    Summary(91, _S.ERROR, "image_expired", "An image expired before it was analysed.", 500),
    Summary(99, _S.ERROR, "internal_error", "An internal error stopped the validation.", 500),
)

BY_REASON: dict[str, Summary] = {s.reason: s for s in SUMMARIES}
ACCEPTED = BY_REASON["accepted"]
#: The accepted description when no presentation-attack model ran: never claim "live".
ACCEPTED_LIVENESS_NOT_ASSESSED = (
    "Valid, unobstructed face of good quality; liveness was not assessed (no "
    "presentation-attack model ran)."
)
TIMEOUT = BY_REASON["timeout"]
IMAGE_EXPIRED = BY_REASON["image_expired"]
INTERNAL_ERROR = BY_REASON["internal_error"]

#: When a stage rejects for several reasons, the summary names the first of these.
REJECTION_PRIORITY: tuple[str, ...] = tuple(
    s.reason for s in SUMMARIES if s.status is SummaryStatus.REJECTED
)


def summary_for_rejections(reasons: list[str]) -> Summary:
    for reason in REJECTION_PRIORITY:
        if reason in reasons:
            return BY_REASON[reason]
    return INTERNAL_ERROR


@dataclass(frozen=True)
class UploadError:
    code: str
    http_status: int
    message: str


UPLOAD_ERRORS: tuple[UploadError, ...] = (
    UploadError("missing_field", 422, "A required form field is missing."),
    UploadError("invalid_field", 422, "A form field has an invalid value."),
    UploadError("empty_file", 400, "The uploaded file is empty."),
    UploadError("file_too_large", 413, "The uploaded file is larger than the limit."),
    UploadError("unsupported_format", 415, "The file is not a JPEG, PNG or WebP image."),
    UploadError("image_undecodable", 422, "The image is damaged or truncated."),
    UploadError("image_too_large", 422, "The image has more pixels than allowed."),
    UploadError("image_too_small", 422, "The image is smaller than the minimum size."),
    UploadError("unauthorized", 401, "A valid API key is required in the X-API-Key header."),
    UploadError("not_found", 404, "No such validation for this client."),
    UploadError("method_not_allowed", 405, "This method is not allowed on this path."),
    UploadError("invalid_request", 400, "The request could not be understood."),
    UploadError("rate_limited", 429, "Too many requests for this client; retry later."),
    UploadError("service_unavailable", 503, "A backing service is unavailable; retry later."),
    UploadError("overloaded", 503, "The service is shedding load; retry later."),
    UploadError("request_timeout", 408, "The request was not received in time."),
    UploadError(
        "idempotency_key_reused",
        422,
        "This Idempotency-Key was already used for a different request.",
    ),
    UploadError(
        "unusable_image",
        422,
        "No usable face in the image (detection, accessory or quality rejected it; "
        "`detail.reason` says which).",
    ),
    UploadError(
        "needs_reenrollment",
        409,
        "The subject's template was made by another face model; enrol it again.",
    ),
    UploadError("internal_error", 500, "An unexpected error occurred; retry later."),
)
UPLOAD_ERROR_BY_CODE: dict[str, UploadError] = {e.code: e for e in UPLOAD_ERRORS}
