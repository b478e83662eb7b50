"""Every Prometheus metric FaceVal exports, declared once, in base units.

Labels are bounded: stage, image (near/far), outcome, status, code, client, model.
Never a user or a transaction id.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: 1 ms to 60 s: queue latency is the headline, and both ends matter.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip

STAGE_QUEUE_SECONDS = Histogram(
    "faceval_stage_queue_seconds",
    "Time a stage job waited between publication and a worker starting it.",
    ["stage", "image", "outcome"],
    buckets=LATENCY_BUCKETS,
)
STAGE_EXECUTION_SECONDS = Histogram(
    "faceval_stage_execution_seconds",
    "Time a stage spent analysing one image (all its models).",
    ["stage", "image", "outcome"],
    buckets=LATENCY_BUCKETS,
)
MODEL_EXECUTION_SECONDS = Histogram(
    "faceval_model_execution_seconds",
    "Time one model spent on one image.",
    ["stage", "model", "image"],
    buckets=LATENCY_BUCKETS,
)
STAGE_JOBS_TOTAL = Counter(
    "faceval_stage_jobs_total",
    "Stage jobs finished, by outcome (pass, reject, error).",
    ["stage", "image", "outcome"],
)
JOBS_IN_PROGRESS = Gauge(
    "faceval_stage_jobs_in_progress",
    "Stage jobs a worker process is running now.",
    ["stage"],
)
MODEL_LOAD_SECONDS = Gauge(
    "faceval_model_load_seconds",
    "How long a worker process took to load a stage's models.",
    ["stage"],
)
VALIDATIONS_TOTAL = Counter(
    "faceval_validations_total",
    "Validations that reached a final status, by status, summary code and client.",
    ["status", "reason", "client"],
)
VALIDATION_SECONDS = Histogram(
    "faceval_validation_duration_seconds",
    "End-to-end time of a validation, from upload to its final status.",
    ["status"],
    buckets=LATENCY_BUCKETS,
)
UPLOADS_REJECTED_TOTAL = Counter(
    "faceval_uploads_rejected_total",
    "Uploads refused before queueing, by error code.",
    ["code"],
)
HTTP_REQUEST_SECONDS = Histogram(
    "faceval_http_request_duration_seconds",
    "Gateway request latency.",
    ["method", "route", "status_code"],
    buckets=LATENCY_BUCKETS,
)
CLIENT_INFO = Gauge(
    "faceval_client_info",
    "Always 1: maps an API client's id to its display name, for dashboards to join on.",
    ["client", "name"],
)
#: 50 us to 1 s: an index search is sub-millisecond until the gallery is large.
MATCH_BUCKETS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
)  # fmt: skip
IDENTITY_SEARCH_SECONDS = Histogram(
    "faceval_identity_search_seconds",
    "1:N: time to bring the template index up to date and search it (probe excluded).",
    ["engine"],
    buckets=MATCH_BUCKETS,
)
IDENTITY_VERIFY_SECONDS = Histogram(
    "faceval_identity_verify_seconds",
    "1:1: time to read a subject's template and compare it (probe excluded).",
    buckets=MATCH_BUCKETS,
)
GALLERY_SUBJECTS = Gauge(
    "faceval_identity_gallery_subjects",
    "Enrolled subjects per client, as last seen by this gateway.",
    ["client"],
)
