"""Stage glue for production ONNX slots: a verified file becomes a scorer, no file a not-run."""

from __future__ import annotations

from typing import Any

from services.onnx_slot import InputSpec, OnnxScorer, OutputSpec
from shared.analysis import Model, UnavailableModel
from shared.models_registry import Registry
from shared.onnx import build_session
from shared.settings import Settings


def onnx_slot(settings: Settings, registry: Registry, name: str, **scorer: Any) -> Model:
    """`name`'s scorer when its verified file is in the model directory, else not run.

    A file that is present but unpinned or mismatching raises (the worker does not start):
    see `Registry.optional`.
    """
    entry = registry.entry(name)
    path = registry.optional(name)
    if path is None:
        return UnavailableModel(
            name, entry.info, f"{entry.file} is not in the model directory {registry.model_dir}"
        )
    return OnnxScorer(
        session=build_session(path, settings),
        key=name,
        info=entry.info,
        input=InputSpec.from_manifest(entry.input),
        output=OutputSpec.from_manifest(entry.output),
        **scorer,
    )
