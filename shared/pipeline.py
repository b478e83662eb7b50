"""The order of the stages, their queues, and the names the analysts' data uses for them."""

from __future__ import annotations

from typing import Final, Literal

StageName = Literal["face_detector", "accessory", "quality", "pad"]
STAGES: Final[tuple[StageName, ...]] = ("face_detector", "accessory", "quality", "pad")

#: The `time_ms_<service>_...` name of each stage in the analysts' columns.
COLUMN_SERVICE: Final[dict[StageName, str]] = {
    "face_detector": "face_detector",
    "accessory": "accessory_detector",
    "quality": "quality",
    "pad": "pad",
}

#: Default port of each worker's /metrics endpoint.
METRICS_PORT: Final[dict[StageName, int]] = {
    "face_detector": 9101,
    "accessory": 9102,
    "quality": 9103,
    "pad": 9104,
}


def queue_name(stage: StageName, prefix: str = "faceval") -> str:
    return f"{prefix}.{stage}"


def task_name(stage: StageName) -> str:
    return f"faceval.{stage}.analyze"


def next_stage(stage: StageName) -> StageName | None:
    index = STAGES.index(stage)
    return STAGES[index + 1] if index + 1 < len(STAGES) else None


def is_stage(name: str) -> bool:
    return name in STAGES
