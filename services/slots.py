"""Stage glue for generic scorer models (ONNX slots): each is its manifest entry alone.

A manifest entry with a `scorer` table is run by its stage: a verified file becomes a
scorer judged as the table says (threshold from the settings or the manifest), no file a
not-run. Adding one is adding its file and its entry; no stage code names it.
"""

from __future__ import annotations

from services.onnx_slot import InputSpec, OnnxScorer, OutputSpec
from shared.analysis import Model, UnavailableModel
from shared.models_registry import Registry, scorer_threshold
from shared.onnx import build_session
from shared.settings import Settings


def onnx_slot(settings: Settings, registry: Registry, name: str) -> Model:
    """`name`'s scorer when its verified file is in the model directory, else not run.

    A file that is present but unpinned or mismatching raises (the worker does not start):
    see `Registry.optional`.
    """
    entry = registry.entry(name)
    if entry.scorer is None:
        raise ValueError(f"model {name!r} has no scorer table in {registry.manifest.path}")
    path = registry.optional(name)
    if path is None:
        return UnavailableModel(
            name, entry.info, f"{entry.file} is not in the model directory {registry.model_dir}"
        )
    threshold = scorer_threshold(entry, settings)
    above = entry.scorer.reject == "above"
    return OnnxScorer(
        session=build_session(path, settings),
        key=name,
        info=entry.info,
        input=InputSpec.from_manifest(entry.input),
        output=OutputSpec.from_manifest(entry.output),
        value_name=entry.scorer.value,
        code=entry.scorer.code,
        reject_above=threshold if above else None,
        reject_below=None if above else threshold,
    )


def stage_slots(settings: Settings, registry: Registry, stage: str) -> list[Model]:
    """Every scorer model the manifest gives `stage`, in manifest order."""
    return [onnx_slot(settings, registry, e.name) for e in registry.manifest.scorers(stage)]
