"""Comparing face templates: the one similarity, the threshold policy and the near/far check.

Similarity is the cosine of the two unit templates, in [-1, 1] (higher: more alike).
With dlib's descriptor, different people still score about 0.7-0.9 and the same person
about 0.9-1.0: the threshold, not the scale, carries the meaning, and it is calibrated on
real pairs by `faceval eval verify` (docs/models.md). Templates of different models or
template versions are never compared: their scores would be meaningless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shared import vectors
from shared.analysis import Embedding, PairResult, Rejection

#: Cosine at which LFW fold 0 (998 images, 601 people) showed FAR 0.1 % with the default
#: template (dlib_resnet_v1, template5 alignment, no mirror averaging; 0.930 with it):
#: see docs/models.md.
DEFAULT_THRESHOLD = 0.915


class TemplateMismatch(ValueError):
    """Two templates from different models (or template versions): they cannot compare."""


def same_space(a: Embedding, b: Embedding) -> bool:
    return a.model == b.model and a.version == b.version


def similarity(a: Embedding, b: Embedding) -> float:
    """Cosine of two templates of one model and version; TemplateMismatch otherwise."""
    if not same_space(a, b):
        raise TemplateMismatch(
            f"templates of {a.model} {a.version} and {b.model} {b.version} do not compare; "
            "re-enrol the subject with the active model"
        )
    if a.vector.shape != b.vector.shape:
        raise TemplateMismatch(f"template sizes differ: {a.vector.shape} vs {b.vector.shape}")
    # The one cosine the index and the API use too, so all three agree to the last digit.
    return vectors.cosine(a.vector, b.vector)


@dataclass(frozen=True)
class IdentityPolicy:
    """The accept threshold on similarity, globally and per client.

    `threshold` is the default (calibrated for FAR 0.1 %); a client with stricter or
    looser needs gets its own in `per_client` (client id -> threshold).
    """

    threshold: float = DEFAULT_THRESHOLD
    per_client: Mapping[str, float] = field(default_factory=dict)

    def threshold_for(self, client_id: str | None = None) -> float:
        if client_id is not None and client_id in self.per_client:
            return self.per_client[client_id]
        return self.threshold


def near_far_match(near: Embedding, far: Embedding, threshold: float) -> PairResult:
    """Accept the pair when the two faces score at least `threshold`; else face_mismatch."""
    score = similarity(near, far)
    scores = {"similarity": score, "threshold": threshold}
    if score >= threshold:
        return PairResult(scores=scores)
    rejection = Rejection(
        code="face_mismatch",
        detail=f"The near and far faces score {score:.3f} similarity; "
        f"at least {threshold:.3f} is needed to be the same person.",
        subject="identity",
    )
    return PairResult(scores=scores, rejections=(rejection,))


@dataclass(frozen=True)
class Candidate:
    subject: str
    similarity: float


def search(
    probe: Embedding, gallery: Mapping[str, Sequence[Embedding]], limit: int = 5
) -> list[Candidate]:
    """1:N: subjects ranked by their best template's similarity to the probe.

    Templates of another model or version are skipped (a gallery mid-migration holds
    both); a subject with none in the probe's space is not a candidate.
    """
    best: list[Candidate] = []
    for subject, templates in gallery.items():
        scores = [similarity(probe, t) for t in templates if same_space(probe, t)]
        if scores:
            best.append(Candidate(subject, max(scores)))
    best.sort(key=lambda c: c.similarity, reverse=True)
    return best[:limit]


def mean_template(templates: Iterable[Embedding]) -> Embedding:
    """One template from several enrolment images of one person (renormalised mean)."""
    items = list(templates)
    if not items:
        raise ValueError("no templates to average")
    first = items[0]
    for other in items[1:]:
        if not same_space(first, other):
            raise TemplateMismatch("cannot average templates of different models or versions")
    return Embedding(first.model, first.version, vectors.mean_template([t.vector for t in items]))
