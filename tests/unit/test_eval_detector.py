"""`faceval eval detector` (precision/recall against boxes) and `faceval calibrate quality`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from shared.analysis import Face, Image
from shared.imaging import encode_jpeg
from shared.settings import Settings
from tools.eval.calibrate import propose
from tools.eval.datasets import load_boxes
from tools.eval.detector import iou, match

#: A box around the astronaut's face, hairline to chin, set by eye on the image.
ASTRONAUT_FACE = [172.0, 45.0, 105.0, 135.0]


def test_iou_and_one_to_one_matching() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    twice = [Face(0, 0, 10, 10, 0.9, ()), Face(1, 0, 10, 10, 0.8, ())]
    # Two detections of one face count once: the second is a false positive.
    assert match(twice, [(0, 0, 10, 10)], 0.5) == 1


def test_reads_wider_face_ground_truth(tmp_path: Path) -> None:
    gt = tmp_path / "wider_face_val_bbx_gt.txt"
    gt.write_text(
        "a.jpg\n2\n1 2 3 4 0 0 0 0 0 0\n5 6 7 8 0 0 0 0 0 0\nb.jpg\n0\n0 0 0 0 0 0 0 0 0 0\n"
    )
    assert load_boxes(gt) == {"a.jpg": [(1, 2, 3, 4), (5, 6, 7, 8)], "b.jpg": []}


def test_eval_detector_reports_precision_and_recall(
    tmp_path: Path, astronaut: Image, coffee: Image, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "astronaut.jpg").write_bytes(encode_jpeg(astronaut))
    (tmp_path / "coffee.jpg").write_bytes(encode_jpeg(coffee))
    labels = tmp_path / "boxes.json"
    # A second, wrong label on the astronaut: found faces 1 of 2 labelled.
    labels.write_text(
        json.dumps({"astronaut.jpg": [ASTRONAUT_FACE, [400, 400, 60, 60]], "coffee.jpg": []})
    )
    with pytest.raises(SystemExit) as done:
        main(["eval", "detector", str(tmp_path), str(labels)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "labelled faces 2, detections 1, matched (IoU >= 0.5) 1" in out
    assert "precision 1.0000  recall 0.5000" in out


def test_calibration_proposes_percentile_bounds_and_env_lines(tmp_path: Path) -> None:
    rows = [
        {
            "classic_metrics": {"sharpness": float(s), "blur_score": 0.5 + s / 1000},
            "brisque": {"score": float(s) / 10},
        }
        for s in range(1, 101)
    ]
    proposals = {
        (p.bound.value, p.bound.kind, p.bound.model): p
        for p in propose(rows, Settings(quality_min_sharpness=20.0,
                                        quality_max_brisque=None), percentile=5.0)
    }  # fmt: skip
    sharp = proposals[("sharpness", "min", "classic_metrics")]
    assert sharp.proposed == pytest.approx(5.95)  # the 5th percentile of 1..100
    assert sharp.current == 20.0 and sharp.current_rejects == pytest.approx(0.19)
    blur = proposals[("blur_score", "max", "classic_metrics")]
    assert blur.proposed == pytest.approx(0.5 + 95.05 / 1000)
    assert proposals[("score", "max", "brisque")].current_rejects is None  # not judged now
    assert ("brightness", "min", "classic_metrics") not in proposals  # not measured


def test_calibrate_quality_command_runs_on_a_folder(
    tmp_path: Path, astronaut: Image, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.jpg").write_bytes(encode_jpeg(astronaut))
    (tmp_path / "b.jpg").write_bytes(encode_jpeg(astronaut[:300, 80:380].copy()))
    with pytest.raises(SystemExit) as done:
        main(["calibrate", "quality", str(tmp_path)])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "2 captures passed the detector stage" in out
    # By name, in the nested section (which wins over the older flat settings).
    assert "FACEVAL_MODELS__CLASSIC_METRICS__LIMITS__MIN_SHARPNESS=" in out
    assert "FACEVAL_MODELS__BRISQUE__LIMITS__MAX_SCORE=" in out
