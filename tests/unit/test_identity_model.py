"""The identity model (dlib ResNet templates) and the near/far same-person check."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

from services.face_detector.model import detect_faces
from services.identity.embedder import TEMPLATE_5, DlibResNetEmbedder, align, similarity_transform
from services.identity.matching import (
    DEFAULT_THRESHOLD,
    IdentityPolicy,
    TemplateMismatch,
    mean_template,
    near_far_match,
    search,
    similarity,
)
from services.identity.stage import build_models, pair_check
from shared.analysis import Embedding, Face, Image, Model
from shared.imaging import decode_rgb
from shared.models_registry import BUNDLED_MANIFEST
from shared.settings import Settings

LFW = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "lfw-fold0"


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> DlibResNetEmbedder:
    models = tmp_path_factory.mktemp("models")
    settings = Settings(model_dir=models, model_manifest=BUNDLED_MANIFEST)
    (model,) = build_models(settings)
    assert isinstance(model, DlibResNetEmbedder)
    return model


def template(embedder: DlibResNetEmbedder, image: Image, face: Face) -> Embedding:
    result = embedder.analyze(image, face)
    assert result.embedding is not None
    return result.embedding


def unit(values: list[float], model: str = "m", version: str = "1") -> Embedding:
    vector = np.asarray(values, dtype=np.float32)
    return Embedding(model, version, vector / np.linalg.norm(vector))


def largest_face(session: ort.InferenceSession, image: Image) -> Face:
    faces = detect_faces(session, image)
    assert faces, "no face found"
    return max(faces, key=lambda f: f.width * f.height)


def test_stage_builds_the_embedder_from_the_packaged_file_with_manifest_version(
    embedder: DlibResNetEmbedder,
) -> None:
    assert isinstance(embedder, Model)
    assert embedder.key == "dlib_resnet_v1"
    assert embedder.info.version == "dlib_face_recognition_resnet_model_v1"
    assert embedder.flip_average is False


def test_template_is_a_unit_128_vector_stamped_with_model_and_version(
    embedder: DlibResNetEmbedder, astronaut: Image, astronaut_face: Face
) -> None:
    result = embedder.analyze(astronaut, astronaut_face)
    assert result.scores == {}
    assert result.embedding is not None
    assert result.embedding.vector.shape == (128,)
    assert np.linalg.norm(result.embedding.vector) == pytest.approx(1.0, abs=1e-5)
    assert result.embedding.model == "dlib_resnet_v1"
    assert result.embedding.version == "dlib_face_recognition_resnet_model_v1+template5"


def test_refuses_an_image_without_a_five_point_face(
    embedder: DlibResNetEmbedder, astronaut: Image
) -> None:
    with pytest.raises(ValueError, match="five landmarks"):
        embedder.analyze(astronaut, None)


def test_alignment_puts_the_landmarks_on_dlibs_template(astronaut_face: Face) -> None:
    points = np.asarray(astronaut_face.landmarks)
    matrix = similarity_transform(points, TEMPLATE_5)
    moved = points @ matrix[:, :2].T + matrix[:, 2]
    # Five points, four degrees of freedom: a face is not exactly the mean face (and
    # RetinaFace marks the nose lower than dlib's tip point), but within a few pixels.
    assert np.abs(moved - TEMPLATE_5).mean() < 4.0
    assert np.abs(moved - TEMPLATE_5).max() < 10.0
    # The eyes land level and about 53 px apart on the 150 px chip.
    assert abs(moved[0, 1] - moved[1, 1]) < 3.0
    assert 45 < moved[1, 0] - moved[0, 0] < 60


def test_both_alignments_give_a_150_px_chip(astronaut: Image, astronaut_face: Face) -> None:
    for alignment in ("template5", "dlib5"):
        chip = align(astronaut, astronaut_face, alignment)
        assert chip.shape == (150, 150, 3) and chip.dtype == np.uint8


def test_same_face_rescaled_and_mirrored_scores_above_the_threshold(
    embedder: DlibResNetEmbedder,
    retinaface_session: ort.InferenceSession,
    tom_hanks: Image,
) -> None:
    padded = np.asarray(
        cv2.copyMakeBorder(tom_hanks, 60, 60, 60, 60, cv2.BORDER_REPLICATE), np.uint8
    )
    other: Image = np.ascontiguousarray(cv2.resize(padded, None, fx=1.7, fy=1.7)[:, ::-1])
    a = template(embedder, padded, largest_face(retinaface_session, padded))
    b = template(embedder, other, largest_face(retinaface_session, other))
    assert similarity(a, b) > DEFAULT_THRESHOLD


def test_different_people_score_below_the_threshold(
    embedder: DlibResNetEmbedder,
    retinaface_session: ort.InferenceSession,
    tom_hanks: Image,
    astronaut: Image,
    astronaut_face: Face,
) -> None:
    padded = np.asarray(
        cv2.copyMakeBorder(tom_hanks, 60, 60, 60, 60, cv2.BORDER_REPLICATE), np.uint8
    )
    hanks = template(embedder, padded, largest_face(retinaface_session, padded))
    collins = template(embedder, astronaut, astronaut_face)
    assert similarity(hanks, collins) < DEFAULT_THRESHOLD
    result = near_far_match(hanks, collins, DEFAULT_THRESHOLD)
    assert [r.code for r in result.rejections] == ["face_mismatch"]


def lfw_template(
    embedder: DlibResNetEmbedder, session: ort.InferenceSession, name: str
) -> Embedding:
    path = LFW / name.rsplit("_", 1)[0] / name
    if not path.is_file():
        pytest.skip(f"LFW calibration photos not found: {path}")
    image = decode_rgb(path.read_bytes())
    return template(embedder, image, largest_face(session, image))


def test_two_lfw_photos_of_one_person_match_and_of_two_people_do_not(
    embedder: DlibResNetEmbedder, retinaface_session: ort.InferenceSession
) -> None:
    first = lfw_template(embedder, retinaface_session, "Ann_Veneman_0001.jpg")
    second = lfw_template(embedder, retinaface_session, "Ann_Veneman_0002.jpg")
    stranger = lfw_template(embedder, retinaface_session, "Angela_Bassett_0001.jpg")
    assert near_far_match(first, second, DEFAULT_THRESHOLD).rejections == ()
    assert near_far_match(first, stranger, DEFAULT_THRESHOLD).rejections != ()


def test_templates_of_different_models_or_versions_never_compare() -> None:
    a = unit([1.0, 0.0], model="dlib_resnet_v1", version="v1+template5+flip")
    with pytest.raises(TemplateMismatch, match="re-enrol"):
        similarity(a, unit([1.0, 0.0], model="mobilefacenet", version="v1+template5+flip"))
    with pytest.raises(TemplateMismatch):
        similarity(a, unit([1.0, 0.0], model="dlib_resnet_v1", version="v1+template5"))
    with pytest.raises(TemplateMismatch):
        near_far_match(a, unit([1.0, 0.0], model="other"), 0.9)


def test_pair_check_rejects_with_face_mismatch_and_reports_score_and_threshold() -> None:
    near, far = unit([1.0, 0.0]), unit([0.6, 0.8])
    result = near_far_match(near, far, threshold=0.9)
    assert result.scores == {"similarity": pytest.approx(0.6), "threshold": 0.9}
    (rejection,) = result.rejections
    assert rejection.code == "face_mismatch"
    assert rejection.subject == "identity"
    assert "0.600" in rejection.detail and "0.900" in rejection.detail


def test_pair_check_accepts_at_the_threshold() -> None:
    result = near_far_match(unit([1.0, 0.0]), unit([0.6, 0.8]), threshold=0.6)
    assert result.rejections == ()


def test_stage_pair_check_reads_stored_embeddings_and_the_clients_threshold() -> None:
    from shared.pipeline import ImageRecord, Policy
    from shared.settings import Settings

    settings = Settings(identity_pair_threshold=0.5)
    near = ImageRecord.from_dict({"verdict": "pass", "embedding": unit([1.0, 0.0]).to_dict()})
    far = ImageRecord.from_dict({"verdict": "pass", "embedding": unit([0.6, 0.8]).to_dict()})
    assert pair_check(near, far, Policy.build(settings, "lenient")).rejections == ()
    strict = pair_check(
        near, far, Policy.build(settings, "strict", {"thresholds": {"identity_pair": 0.99}})
    )
    assert strict.scores["threshold"] == 0.99
    assert [r.code for r in strict.rejections] == ["face_mismatch"]


def test_policy_uses_a_clients_own_threshold_when_configured() -> None:
    policy = IdentityPolicy(threshold=0.93, per_client={"bank": 0.95})
    assert policy.threshold_for("bank") == 0.95
    assert policy.threshold_for("other") == 0.93
    assert policy.threshold_for(None) == 0.93


def test_search_ranks_subjects_and_skips_templates_of_another_model() -> None:
    probe = unit([1.0, 0.1])
    gallery = {
        "alice": [unit([1.0, 0.0])],
        "bob": [unit([0.0, 1.0]), unit([0.7, 0.7])],
        "old": [unit([1.0, 0.1], model="retired")],
    }
    ranked = search(probe, gallery)
    assert [c.subject for c in ranked] == ["alice", "bob"]


def test_mean_template_is_unit_and_refuses_mixed_models() -> None:
    mean = mean_template([unit([1.0, 0.0]), unit([0.0, 1.0])])
    assert np.linalg.norm(mean.vector) == pytest.approx(1.0)
    with pytest.raises(TemplateMismatch):
        mean_template([unit([1.0, 0.0]), unit([1.0, 0.0], model="other")])
