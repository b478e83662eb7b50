"""The pad stage: MiniFASNet decides; heuristics, production slots and geometry are recorded.

Per image: MiniFASNet (both crops fused; rejects at FACEVAL_PAD_MINIFASNET_THRESHOLD, or
is recorded as not run when its converted files are not in the model directory: then
nothing in this stage has judged liveness), the presentation-attack heuristics (scores
only: their weights were never fitted on attack data, so they do not reject), the
manifest's PAD scorer models (the operator-supplied production slots; run and judged when
their verified files are present, recorded as not run otherwise), and the face geometry
the pair check needs.
Across the pair: near/far consistency and the fused spoof probability
(services/pad/geometry.py), report-only unless FACEVAL_PAD_PAIR_REJECT.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

from services.pad.geometry import NearFarConsistency
from shared.analysis import Model, ModelInfo, PairResult, UnavailableModel
from shared.models_registry import Registry, load_manifest, manifest_path
from shared.pipeline import ImageRecord, Policy, StageDefinition
from shared.settings import Settings, get_settings

#: The two MiniFASNet networks (manifest names) and their upstream crop scales.
MINIFASNET_CROPS = (("minifasnet_v2", 2.7), ("minifasnet_v1se", 4.0))


def minifasnet(settings: Settings, registry: Registry) -> Model:
    """Both MiniFASNet networks when their verified files are present, else not run."""
    from services.pad.minifasnet import CropModel, MiniFASNet
    from shared.onnx import build_session

    fusion = registry.entry("minifasnet")
    entries = [registry.entry(name) for name, _ in MINIFASNET_CROPS]
    info = ModelInfo(fusion.name, "+".join([fusion.version, *(e.version for e in entries)]))
    paths = [registry.optional(name) for name, _ in MINIFASNET_CROPS]
    missing = [e.file or e.name for e, path in zip(entries, paths, strict=True) if path is None]
    if missing:
        return UnavailableModel(
            fusion.name,
            info,
            f"{', '.join(missing)} not in the model directory {registry.model_dir} "
            "(`faceval models pull` converts them from the upstream files)",
        )
    crops = [
        CropModel(name, scale, build_session(path, settings), entry.info)
        for (name, scale), entry, path in zip(MINIFASNET_CROPS, entries, paths, strict=True)
        if path is not None
    ]
    return MiniFASNet(
        models=crops,
        threshold=settings.model_threshold("minifasnet", settings.pad_minifasnet_threshold),
        info=info,
        min_context=settings.pad_minifasnet_min_context,
    )


def build_models(settings: Settings) -> Sequence[Model]:
    from services.pad.geometry import FaceGeometry
    from services.pad.model import PadHeuristics
    from services.slots import stage_slots

    registry = Registry.from_settings(settings)
    return [
        minifasnet(settings, registry),
        PadHeuristics(threshold=None, info=registry.info("as_heuristics")),
        *stage_slots(settings, registry, "pad"),
        FaceGeometry(info=registry.info("pad_geometry")),
    ]


@lru_cache(maxsize=4)
def fused_models(manifest: Path) -> tuple[str, ...]:
    """The per-image PAD probabilities the pair fuses: MiniFASNet and the manifest's PAD
    scorers marked `fused`. The heuristics are left out: their hand-set weights were never
    fitted on attack data."""
    scorers = load_manifest(manifest).scorers("pad")
    return ("minifasnet", *(e.name for e in scorers if e.scorer is not None and e.scorer.fused))


def pair_check(near: ImageRecord, far: ImageRecord, policy: Policy) -> PairResult:
    # Settings are read per call (cached), not at import, so the environment decides.
    settings = get_settings()
    models = fused_models(manifest_path(settings))
    check = NearFarConsistency(settings.pad_fused_threshold, settings.pad_pair_reject, models)
    return check({"scores": near.scores}, {"scores": far.scores})


STAGE = StageDefinition(name="pad", build_models=build_models, pair_check=pair_check)
