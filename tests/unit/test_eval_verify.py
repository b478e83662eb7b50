"""`faceval eval verify`: the verification figures from genuine and impostor scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.eval.verify import (
    eer,
    load_people,
    multi_enrolment,
    pair_scores,
    rank1,
    rates,
    threshold_at_far,
)


def test_threshold_at_far_accepts_at_most_the_target_share_of_impostors() -> None:
    impostor = np.linspace(0.0, 0.999, 1000)
    threshold = threshold_at_far(impostor, 0.01)
    assert (impostor >= threshold).sum() == 10
    genuine = np.array([0.5, 0.995, 0.999])
    tar, far = rates(genuine, impostor, threshold)
    assert far == pytest.approx(0.01)
    assert tar == pytest.approx(2 / 3)


def test_eer_is_zero_when_the_distributions_do_not_overlap_and_half_when_equal() -> None:
    assert eer(np.array([0.9, 0.95]), np.array([0.1, 0.2]))[0] == 0.0
    same = np.array([0.1, 0.2, 0.3, 0.4])
    assert eer(same, same)[0] == pytest.approx(0.5, abs=0.15)


def _templates() -> tuple[np.ndarray, np.ndarray]:
    # Three people: two tight clusters and a loner; one image with no face (NaN row).
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3]
    labels = np.array([0, 0, 0, 1, 1, 2, 1])
    templates = centres[labels] + 0.05 * rng.standard_normal((len(labels), 4))
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    templates[6] = np.nan
    return templates, labels


def test_pair_scores_split_genuine_and_impostor_pairs_and_skip_missing_faces() -> None:
    templates, labels = _templates()
    genuine, impostor = pair_scores(templates, labels)
    assert genuine.size == 3 + 1  # C(3,2) of person 0, C(2,2) of person 1
    assert impostor.size == 15 - 4
    assert genuine.min() > impostor.max()


def test_rank1_enrols_each_persons_first_image_and_probes_the_rest() -> None:
    templates, labels = _templates()
    rate, probes = rank1(templates, labels, only_probed=False)
    assert (rate, probes) == (1.0, 3)


def test_multi_enrolment_compares_one_and_two_enrolment_images_on_the_same_probes() -> None:
    templates, labels = _templates()
    out = multi_enrolment(templates, labels, far=0.1)
    assert out["people"] == 1
    assert out["enrol_1"]["genuine_pairs"] == out["enrol_2"]["genuine_pairs"] == 1


def test_load_people_reads_one_folder_per_person(tmp_path: Path) -> None:
    for person, count in (("ann", 2), ("bob", 1)):
        (tmp_path / person).mkdir()
        for i in range(count):
            (tmp_path / person / f"{i}.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a person")
    gallery = load_people(tmp_path)
    assert gallery.people == ["ann", "bob"]
    assert gallery.labels.tolist() == [0, 0, 1]
