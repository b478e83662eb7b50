"""The production stage definitions, for code that runs the pipeline in process.

`shared` cannot import `services` (it is the floor below), so the list of stage modules is
put together here, on the top floor, for the CLI, the evaluation tools and the benchmarks.
"""

from __future__ import annotations

import importlib

from shared.pipeline import STAGES, InProcessPipeline, StageDefinition, StageName
from shared.settings import Settings, get_settings


def stage_definition(stage: StageName) -> StageDefinition:
    definition = importlib.import_module(f"services.{stage}.stage").STAGE
    if not isinstance(definition, StageDefinition):
        raise TypeError(f"services.{stage}.stage.STAGE is not a StageDefinition")
    return definition


def stage_definitions(until: StageName | None = None) -> list[StageDefinition]:
    """Every stage in order, or the stages up to `until` included."""
    stages = STAGES[: STAGES.index(until) + 1] if until else STAGES
    return [stage_definition(stage) for stage in stages]


def in_process_pipeline(
    settings: Settings | None = None, until: StageName | None = None
) -> InProcessPipeline:
    """The production models of every stage (or those up to `until`), loaded once."""
    return InProcessPipeline(stage_definitions(until), settings or get_settings())
