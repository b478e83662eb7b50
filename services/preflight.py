"""Fail fast: a worker whose model files are missing or do not verify exits at start.

Celery swallows exceptions raised while preloading models (the worker would report
ready and then fail every job), so each stage's entry point checks its registry entries
first: offline package models are materialised and verified, production files present
in the model directory must verify, absent ones are recorded as not run later.
"""

from __future__ import annotations

import sys

from shared.models_registry import ModelNotReady, Registry
from shared.runtime import StageDefinition
from shared.settings import Settings, get_settings


def check_models(stage: str, settings: Settings) -> list[str]:
    """What is wrong with the stage's model files (empty when the worker may start)."""
    problems = []
    try:
        registry = Registry.from_settings(settings)
    except (OSError, ValueError) as exc:
        return [f"cannot read the model manifest: {exc}"]
    for entry in registry.manifest:
        if entry.stage != stage or entry.file is None:
            continue
        try:
            if entry.source.kind == "package":
                registry.require(entry.name, materialise_from_package=True)
            else:
                registry.optional(entry.name)
        except ModelNotReady as exc:
            problems.append(str(exc))
    return problems


def preflight(definition: StageDefinition, settings: Settings | None = None) -> None:
    problems = check_models(definition.name, settings or get_settings())
    if problems:
        for problem in problems:
            print(f"{definition.name} worker cannot start: {problem}", file=sys.stderr)
        sys.exit(2)
