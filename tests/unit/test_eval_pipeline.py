"""`faceval eval pipeline`: labels, the production runner on a labelled folder, the report."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from tools.eval.pipeline import (
    Outcome,
    Sample,
    label_of,
    limited,
    load_samples,
    render,
    summarise,
    write_docs,
)


def test_labels_come_from_the_nearest_labelled_folder_and_its_aliases() -> None:
    assert label_of(Path("with_mask/a.jpg")) == "mask"
    assert label_of(Path("without_mask/a.jpg")) == "genuine"
    assert label_of(Path("attack/print/x/a.jpg")) == "print"
    assert label_of(Path("misc/a.jpg")) is None


def test_reads_labels_from_a_csv_with_an_optional_far_image(tmp_path: Path) -> None:
    (tmp_path / "labels.csv").write_text("path,label,far\nn.jpg,genuine,f.jpg\nm.jpg,with_mask,\n")
    samples = load_samples(tmp_path, tmp_path / "labels.csv")
    assert samples == [
        Sample(tmp_path / "n.jpg", "genuine", tmp_path / "f.jpg"),
        Sample(tmp_path / "m.jpg", "mask", None),
    ]


def test_limit_takes_the_same_seeded_photos_per_label() -> None:
    samples = [Sample(Path(f"{i}.jpg"), "genuine" if i % 2 else "mask") for i in range(20)]
    first, again = limited(samples, 3, seed=1), limited(samples, 3, seed=1)
    assert first == again
    assert sorted(s.label for s in first) == ["genuine"] * 3 + ["mask"] * 3


def _outcome(label: str, reason: str, by: str | None, found: list[str] | None = None,
             subject: str | None = None) -> Outcome:  # fmt: skip
    reasons = [] if reason == "accepted" else [
        {"stage": by, "code": reason, "subject": subject, "detail": "x 1.0", "image": "near"}
    ]  # fmt: skip
    return Outcome(f"{label}.jpg", label, reason, by, reasons, found or [], 0.1)


def test_report_counts_false_rejections_by_rule_recall_and_false_positives() -> None:
    outcomes = [
        _outcome("genuine", "accepted", None),
        _outcome("genuine", "accepted", None, found=["glasses"]),
        _outcome("genuine", "low_quality", "quality", subject="brightness"),
        _outcome("genuine", "no_face", "face_detector"),
        _outcome("mask", "face_mask", "accessory", found=["face_mask"]),
        _outcome("mask", "accepted", None),
        _outcome("mask", "no_face", "face_detector"),
    ]
    report = summarise(outcomes)
    genuine = report["genuine"]
    assert (genuine["total"], genuine["false_rejections"]) == (4, 2)
    assert genuine["frr"] == 0.5
    assert genuine["frr_face_found"] == pytest.approx(1 / 3, abs=1e-4)
    assert genuine["by_rule"] == {"quality/low_quality[brightness]": 1,
                                  "face_detector/no_face": 1}  # fmt: skip
    mask = report["accessories"]["face_mask"]
    assert mask["with_face_found"] == 2 and mask["not_found_by_detector"] == 1
    assert mask["recall_rejected_with_reason"] == 0.5
    assert report["accessories"]["glasses"]["false_positive_rate_on_genuine"] == pytest.approx(
        1 / 3, abs=1e-4
    )
    assert report["expected"]["mask"]["as_expected"] == 1
    assert "face_mask" in render(report, "test")


def test_docs_section_is_replaced_between_its_markers(tmp_path: Path) -> None:
    page = tmp_path / "models.md"
    page.write_text("# Models\n\nintro\n")
    write_docs(page, "first", "faceval eval pipeline X")
    write_docs(page, "second", "faceval eval pipeline X")
    text = page.read_text()
    assert text.count("eval-pipeline:begin") == 1
    assert "second" in text and "first" not in text and text.startswith("# Models\n\nintro")


@pytest.mark.integration
def test_runs_the_production_stages_on_a_labelled_folder(tmp_path: Path) -> None:
    from tools.eval.pipeline import main
    from tools.samples import astronaut_pair, no_face_pair

    for label, (near, _) in (("genuine", astronaut_pair()), ("no_face", no_face_pair())):
        (tmp_path / label).mkdir()
        rgb = np.asarray(near, dtype=np.uint8)
        cv2.imwrite(str(tmp_path / label / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = tmp_path / "report.json"
    assert main([str(tmp_path), "--json", str(out)]) == 0
    import json

    report = json.loads(out.read_text())
    assert report["expected"]["no_face"]["as_expected"] == 1
    assert report["counts"] == {"genuine": 1, "no_face": 1}
