"""All configuration, in one place, read from `FACEVAL_*` environment variables.

Defaults point at services on this machine so that every `faceval` command run beside a
running stack finds RabbitMQ, Redis and MongoDB with no flags.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelSettings(BaseModel):
    """One model's settings, under `models.<manifest name>`."""

    #: Replaces the threshold of a scorer model (its manifest `scorer` table) or of a
    #: built-in model with one threshold (MiniFASNet).
    threshold: float | None = None
    #: Replaces named limits of a model with several (its manifest `limits` table: the
    #: classic quality bounds, the accessory labels' thresholds).
    limits: dict[str, float] = Field(default_factory=dict)


class Settings(BaseSettings):
    # Secrets come from the environment or from files in FACEVAL_SECRETS_DIR (one file per
    # setting, named like its variable, e.g. faceval_pseudonym_secret: Kubernetes/Docker).
    model_config = SettingsConfigDict(
        env_prefix="FACEVAL_",
        env_file=None,
        extra="ignore",
        secrets_dir=os.environ.get("FACEVAL_SECRETS_DIR"),
        # Nested sections: FACEVAL_MODELS__LIQE__THRESHOLD=0.4 sets models.liqe.threshold.
        env_nested_delimiter="__",
    )

    # --- stores -------------------------------------------------------------------------
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    redis_url: str = "redis://127.0.0.1:6379/0"
    #: retryWrites=false: the embedded server keeps every retryable write's record and walks
    #: them on each write; a single server has no failover for retries to help with anyway.
    #: Deployments set their own URL.
    mongo_url: str = "mongodb://127.0.0.1:27017/?retryWrites=false"
    mongo_db: str = "faceval"
    #: Stage queues are `<prefix>.<stage>`: lets environments share one RabbitMQ vhost.
    queue_prefix: str = "faceval"
    #: `faceval up` starts the embedded MongoDB-wire server (secantusdb) when the MongoDB URL
    #: points at this machine and nothing answers there. Production sets this false.
    embedded_mongo: bool = True
    #: Where `faceval up` keeps logs, samples and the embedded server's files.
    state_dir: Path = Path(".faceval")

    # --- gateway ------------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8000
    api_version: str = "v1"
    max_upload_bytes: int = 10 * 1024 * 1024
    #: Checked from the header, before a full decode (decompression bombs).
    max_image_pixels: int = 40_000_000
    min_image_side: int = 128
    max_wait_seconds: float = 30.0
    image_ttl_seconds: int = 600
    #: Transactions still pending after this are swept to the timeout status.
    transaction_deadline_seconds: float = 120.0
    sweep_interval_seconds: float = 5.0
    #: Keyed-hash secret for pseudonymising end-user identifiers.
    pseudonym_secret: SecretStr = SecretStr("faceval-dev-only-change-me")
    #: Delete transaction documents after this many days (0 keeps them).
    retention_days: int = 90
    #: Default per-client limit; a client's own `rate_limit_per_minute` overrides it.
    rate_limit_per_minute: int = 600
    #: New validations are refused (503) while more jobs than this wait in the stage queues.
    max_queue_depth: int = 2000
    queue_depth_poll_seconds: float = 1.0
    #: Slow clients: a request's head must arrive within `header_read_timeout_seconds` and
    #: its body within `body_read_timeout_seconds` (408), idle keep-alive connections close
    #: after `keep_alive_timeout_seconds` (gateway/server.py, gateway/bodyguard.py).
    header_read_timeout_seconds: float = 10.0
    body_read_timeout_seconds: float = 60.0
    keep_alive_timeout_seconds: int = 5
    #: How long an `Idempotency-Key` keeps answering with the transaction it created.
    idempotency_retention_seconds: int = 86400
    #: Publish-or-repair: a pending transaction whose first jobs were never confirmed
    #: published (its gateway died in between) is re-published by the sweeper after this.
    republish_grace_seconds: float = 10.0

    # --- workers ------------------------------------------------------------------------
    #: Task threads per worker: 2, so a stage's near and far images run at once (ONNX
    #: Runtime, OpenCV and NumPy release the GIL). Each thread takes one message at a time,
    #: so a crashed worker has at most two jobs redelivered.
    worker_concurrency: int = 2
    #: A job whose analysis fails (or kills its worker) this many times is dead-lettered.
    max_job_attempts: int = 3
    #: Dead-lettered transactions keep their images this long, so an operator can requeue.
    dead_letter_image_ttl_seconds: int = 3600
    #: Port of a worker's /metrics endpoint; 0 picks the stage's default.
    metrics_port: int = 0
    onnx_providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    onnx_intra_op_threads: int = 1
    onnx_inter_op_threads: int = 1
    model_dir: Path = Path("models")
    #: The model registry's manifest; None means `<model_dir>/manifest.toml`.
    model_manifest: Path | None = None
    #: Upstream weight files that `faceval models pull` converts (manifest source kind
    #: "convert"); None means `<checkout>/../shared/models`.
    model_source_dir: Path | None = None
    #: "auto" runs SCRFD when its verified file is in the model directory, else RetinaFace.
    detector_model: Literal["auto", "retinaface_mobilenet", "scrfd_10g"] = "auto"

    # --- decisions ----------------------------------------------------------------------
    detector_max_side: int = 640
    #: RetinaFace's (the manifest's retinaface_mobilenet limit min_score; SCRFD has its own,
    #: FACEVAL_MODELS__SCRFD_10G__LIMITS__MIN_SCORE).
    detector_score_threshold: float = 0.8
    #: Framing (services/face_detector/framing.py; measured in docs/models.md, Framing).
    #: Web and phone photos are often tight crops: the face may spill 40 % of its size past
    #: the border (landmarks must stay inside) and be 40 px wide before it is refused.
    #: The ratio is face height over image height, a floor a far capture clears; the
    #: near/far relation is the pair rule (far face at most `max_far_to_near_face` times
    #: the near one's size).
    min_face_px: int = 40
    min_face_ratio: float = 0.05
    face_border_margin: float = 0.40
    max_far_to_near_face: float = 1.25
    #: A second face rejects only when it could be a second person presenting: at least
    #: this share of the main face's size, this detection score, away from the border.
    second_face_min_size: float = 0.7
    second_face_min_score: float = 0.9
    #: Head-pose limits in degrees; None reports the angle without judging it. The
    #: five-landmark pitch confuses a smile with a lowered head, hence not judged.
    max_yaw_degrees: float | None = 55.0
    max_pitch_degrees: float | None = None
    max_roll_degrees: float | None = 40.0
    #: Per-accessory probability thresholds replacing the manifest's limits (chosen on
    #: held-out data, docs/models.md), e.g. FACEVAL_ACCESSORY_THRESHOLDS='{"glasses": 0.7}';
    #: FACEVAL_MODELS__ACCESSORY_CLASSIFIER__LIMITS__GLASSES=0.7 wins over it.
    accessory_thresholds: dict[str, float] = Field(default_factory=dict)
    #: Reason codes (or subjects) any stage reports without rejecting; a client's record may
    #: override it (`policy.report_only`, `policy.reject`). Clear glasses: reported.
    report_only_reasons: list[str] = Field(default_factory=lambda: ["glasses"])
    #: Quality limits from `faceval calibrate quality` on 1,721 real genuine photos (the
    #: percentile each sits at: docs/models.md, Framing and quality limits); brightness
    #: and contrast are of the skin. NIQE does not track blur on face crops: reported only.
    #: Each is a manifest limit (classic_metrics, brisque, niqe): the nested
    #: FACEVAL_MODELS__<MODEL>__LIMITS__<LIMIT> wins over these flat settings.
    quality_min_sharpness: float = 12.0
    quality_min_brightness: float = 40.0
    quality_max_brightness: float = 240.0
    quality_min_contrast: float = 0.025
    #: Blur and SVD scores overlap sharpness and BRISQUE (every blurred sample trips those
    #: too) and each cost ~1 % of genuine tight crops: recorded, not judged.
    quality_max_blur_score: float | None = None
    quality_max_svd_score: float | None = None
    quality_min_colorfulness: float | None = None
    quality_max_brisque: float | None = 72.0
    quality_max_niqe: float | None = None
    quality_min_liqe: float | None = None
    quality_min_topiq: float | None = None
    #: Per model, by manifest name: FACEVAL_MODELS__<NAME>__THRESHOLD=<value> (a scorer
    #: model, MiniFASNet) or FACEVAL_MODELS__<NAME>__LIMITS__<LIMIT>=<value> (a model's
    #: manifest `limits`), or JSON in FACEVAL_MODELS='{"liqe": {"threshold": 0.4}}'. These
    #: win over the flat setting the manifest names, which wins over the manifest's value.
    models: dict[str, ModelSettings] = Field(default_factory=dict)
    #: Spoof probability at or above which a PAD model rejects the image.
    pad_heuristics_threshold: float = 0.5
    pad_model_threshold: float = 0.5
    #: MiniFASNet (both crops fused): spoof probability at or above which the image is
    #: rejected. Set for BPCER <= 1 % on genuine photos (docs/models.md, MiniFASNet).
    pad_minifasnet_threshold: float = 0.995
    #: Below this many face boxes fitting in the image (a tight face crop) MiniFASNet
    #: has no surround to judge: the image is recorded as not assessed, never rejected.
    pad_minifasnet_min_context: float = 1.5
    #: The near/far pair: fused spoof probability threshold, and whether reaching it
    #: rejects. Off by default: see docs/models.md (not shown to separate real captures).
    pad_fused_threshold: float = 0.5
    pad_pair_reject: bool = False
    #: Identity (dlib_resnet_v1 cosine similarity; LFW fold 0 figures in docs/models.md).
    #: 1:1 verification and duplicate search: 0.915 accepts 97.7 % of one-photo-against-one
    #: matches at 0.48 % impostors (FAR 0.1 % is 0.928, for a client that sets it). The
    #: near/far check: 0.908, where same- and different-person errors are both ~1 %.
    #: Per-client overrides: client id -> threshold (FACEVAL_IDENTITY_CLIENT_THRESHOLDS=
    #: '{"bank-a": 0.95}') or the client's policy. A model change needs re-enrolment.
    identity_threshold: float = 0.915
    identity_pair_threshold: float = 0.908
    identity_client_thresholds: dict[str, float] = Field(default_factory=dict)
    #: Average the template with the mirrored face's: +1.7 points of TAR at FAR 0.1 % on
    #: LFW for +100 ms per face (twice the latency budget), so off; with it on, the FAR
    #: 0.1 % threshold is 0.930 (docs/models.md).
    identity_flip_average: bool = False
    identity_alignment: Literal["template5", "dlib5"] = "template5"
    #: The subjects' template index (shared/vectors.py): "embedded" (in-process HNSW, no
    #: server) or "qdrant" (a Qdrant server or cluster at `qdrant_url`).
    vector_engine: Literal["embedded", "qdrant"] = "embedded"
    qdrant_url: str = "http://127.0.0.1:6333"
    #: The Qdrant server's API key (its `service.api_key`), sent as the `api-key` header;
    #: None for a server without one (a development server on this machine).
    qdrant_api_key: SecretStr | None = None
    #: 1:N search returns subjects at or above this similarity (and at most `k`); below
    #: the identity threshold, so that near misses are seen, never reported as matches.
    identity_search_floor: float = 0.85
    #: How long a subjects request waits for its probe images' templates (503 after).
    identity_probe_timeout_seconds: float = 30.0

    # --- analytics ETL (`faceval etl`) -------------------------------------------------
    #: Staging area and the optional PostgreSQL warehouse.
    etl_postgres_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    etl_staging_schema: str = "faceval_staging"
    etl_warehouse_schema: str = "faceval_warehouse"
    #: The embedded analytical store (DuckDB file), the default warehouse.
    etl_warehouse: Path = Path(".faceval/warehouse.duckdb")
    etl_backend: Literal["duckdb", "postgres"] = "duckdb"
    #: Re-keys the already pseudonymised identifiers in every export: analysts' files cannot
    #: be joined back to the operational database without this second secret.
    etl_pseudonym_secret: SecretStr = SecretStr("faceval-etl-dev-only-change-me")
    #: A user's process with no acceptance and no attempt for this long counts as abandoned.
    etl_abandon_after_hours: float = 24.0

    log_level: str = "INFO"

    def model_override(self, name: str) -> float | None:
        """The threshold set for `name` in the nested section, if any."""
        override = self.models.get(name)
        return None if override is None else override.threshold

    def model_limits(self, name: str) -> dict[str, float]:
        """`name`'s limits set in the nested section (FACEVAL_MODELS__<NAME>__LIMITS__<LIMIT>)."""
        override = self.models.get(name)
        return {} if override is None else dict(override.limits)

    def model_threshold(self, name: str, default: float) -> float:
        """A built-in model's threshold: its nested setting (FACEVAL_MODELS__<NAME>__THRESHOLD)
        when set, else the flat setting the caller passes."""
        override = self.model_override(name)
        return default if override is None else override


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
