"""All configuration, in one place, read from `FACEVAL_*` environment variables.

Defaults point at services on this machine so that every `faceval` command run beside a
running stack finds RabbitMQ, Redis and MongoDB with no flags.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="FACEVAL_", env_file=None, extra="ignore", secrets_dir=None
    )

    # --- stores -------------------------------------------------------------------------
    broker_url: str = "amqp://guest:guest@127.0.0.1:5672//"
    redis_url: str = "redis://127.0.0.1:6379/0"
    mongo_url: str = "mongodb://127.0.0.1:27017/"
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

    # --- workers ------------------------------------------------------------------------
    worker_concurrency: int = 1
    #: Port of a worker's /metrics endpoint; 0 picks the stage's default.
    metrics_port: int = 0
    onnx_providers: list[str] = Field(default_factory=lambda: ["CPUExecutionProvider"])
    onnx_intra_op_threads: int = 1
    onnx_inter_op_threads: int = 1
    model_dir: Path = Path("models")

    # --- decisions ----------------------------------------------------------------------
    detector_max_side: int = 640
    detector_score_threshold: float = 0.8
    min_face_px: int = 64
    min_face_ratio: float = 0.10
    multiple_faces_policy: Literal["reject", "dominant"] = "reject"
    dominant_face_ratio: float = 2.5

    log_level: str = "INFO"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
