"""`faceval eval pad`: ISO/IEC 30107-3 arithmetic, dataset layouts, simulated attacks, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cli.main import main
from shared.analysis import Image
from shared.imaging import encode_jpeg
from tools.eval.datasets import SIMULATION_MARKER, load_pad_dataset
from tools.eval.iso import det_points, evaluate
from tools.eval.pad import SIMULATION_BANNER
from tools.eval.simulate import generate, print_attack, replay_attack

BONA = [0.05, 0.10, 0.20, 0.30, 0.40, 0.45, 0.50, 0.60, 0.70, 0.90]
ATTACKS = {"print": [0.30, 0.55, 0.80, 0.95], "replay": [0.65, 0.85, 0.99]}


def test_apcer_per_type_max_and_bpcer_at_the_operating_threshold() -> None:
    m = evaluate(BONA, ATTACKS, threshold=0.5)
    # Attacks scoring below 0.5 pass as bona fide: one print in four, no replay.
    assert m.at_threshold.apcer_by_type == {"print": 0.25, "replay": 0.0}
    assert m.at_threshold.apcer_max == 0.25
    # Bona fide at or above 0.5: 0.5, 0.6, 0.7, 0.9.
    assert m.at_threshold.bpcer == pytest.approx(0.4)
    assert m.bona_fide == 10 and m.attacks == {"print": 4, "replay": 3}


def test_apcer_at_a_bpcer_target_uses_the_lowest_threshold_meeting_it() -> None:
    m = evaluate(BONA, ATTACKS, threshold=0.5, targets=(0.1, 0.2))
    # BPCER <= 10 %: only the 0.9 bona fide may be flagged: threshold just above 0.7.
    point = m.at_bpcer[0.1]
    assert point.threshold == pytest.approx(0.7) and point.threshold > 0.7
    assert point.bpcer == pytest.approx(0.1)
    assert point.apcer_by_type == {"print": 0.5, "replay": pytest.approx(1 / 3)}
    # BPCER <= 20 %: just above 0.6; prints 0.30 and 0.55 get through.
    assert m.at_bpcer[0.2].apcer_max == 0.5
    # The recommended threshold is the BPCER <= 5 % point: above every bona fide score.
    assert m.recommended.bpcer == 0.0 and m.recommended.threshold > 0.9


def test_bpcer_at_an_apcer_target_and_the_eer() -> None:
    m = evaluate(BONA, ATTACKS, threshold=0.5, targets=(0.0,))
    # No attack may pass: the threshold must be <= 0.30, flagging 7 of 10 bona fide.
    assert m.at_apcer[0.0].threshold == pytest.approx(0.30)
    assert m.at_apcer[0.0].bpcer == pytest.approx(0.7)
    assert 0.0 < m.eer < 0.5


def test_det_points_run_from_all_flagged_to_none() -> None:
    apcers, bpcers = det_points(np.array(BONA), np.array(ATTACKS["print"]))
    assert (apcers[0], bpcers[0]) == (0.0, 1.0)
    assert (apcers[-1], bpcers[-1]) == (1.0, 0.0)
    assert np.all(np.diff(apcers) >= 0) and np.all(np.diff(bpcers) <= 0)


def test_metrics_need_both_classes() -> None:
    with pytest.raises(ValueError, match="bona fide"):
        evaluate([], ATTACKS, threshold=0.5)


def _write(path: Path, image: Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_jpeg(image))


def test_reads_the_simple_layout_with_types_and_limits(tmp_path: Path, astronaut: Image) -> None:
    for rel in (
        "bona_fide/a.jpg",
        "bona_fide/sub/b.jpg",
        "attack/print/c.jpg",
        "attack/replay/d.png",
        "attack/replay/e.jpg",
        "attack/replay/notes.txt",
    ):
        _write(tmp_path / rel, astronaut[:64, :64])
    data = load_pad_dataset(tmp_path)
    assert data.layout == "simple" and not data.simulated
    kinds = sorted((s.label, s.attack_type) for s in data.samples)
    assert kinds == [
        ("attack", "print"),
        ("attack", "replay"),
        ("attack", "replay"),
        ("bona_fide", None),
        ("bona_fide", None),
    ]
    assert len(load_pad_dataset(tmp_path, limit=1).samples) == 3


def test_reads_the_celeba_spoof_layout_from_its_label_file(
    tmp_path: Path, astronaut: Image
) -> None:
    files = {
        "Data/test/4916/live/000001.jpg": (0, 0),
        "Data/test/4916/spoof/000002.jpg": (1, 1),
        "Data/test/4917/spoof/000003.png": (9, 1),
    }
    labels = {}
    for rel, (kind, spoof) in files.items():
        _write(tmp_path / rel, astronaut[:64, :64])
        label = [0] * 44
        label[40], label[43] = kind, spoof
        labels[rel] = label
    (tmp_path / "metas/intra_test").mkdir(parents=True)
    (tmp_path / "metas/intra_test/test_label.json").write_text(json.dumps(labels))
    data = load_pad_dataset(tmp_path)
    assert data.layout == "celeba_spoof"
    assert sorted((s.label, s.attack_type) for s in data.samples) == [
        ("attack", "phone"),
        ("attack", "photo"),
        ("bona_fide", None),
    ]


def test_celeba_spoof_without_labels_falls_back_to_live_and_spoof_folders(
    tmp_path: Path, astronaut: Image
) -> None:
    _write(tmp_path / "Data/test/1/live/a.jpg", astronaut[:64, :64])
    _write(tmp_path / "Data/test/1/spoof/b.jpg", astronaut[:64, :64])
    data = load_pad_dataset(tmp_path)
    assert sorted((s.label, s.attack_type) for s in data.samples) == [
        ("attack", "spoof"),
        ("bona_fide", None),
    ]


def test_simulated_replays_carry_the_screen_cues_the_heuristics_look_for(
    astronaut: Image,
) -> None:
    from services.pad.model import cue_scores
    from tools.samples import astronaut_pair

    near, _ = astronaut_pair()
    face_box = None  # the whole near crop is the face region here
    bona = cue_scores(near, face_box)
    replay = cue_scores(replay_attack(near, seed=1), face_box)
    printed = print_attack(near, seed=1)
    assert replay["moire"] > bona["moire"] + 0.3
    # A print is framed by a paper border and has lower contrast than the original.
    assert printed.shape[0] > near.shape[0] and printed.std() < near.std() + 5


def test_every_simulated_output_says_so(tmp_path: Path, astronaut: Image) -> None:
    out = tmp_path / "sim"
    generate(out, [("astro", astronaut)])
    assert "NOT a valid PAD evaluation" in (out / SIMULATION_MARKER).read_text()
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg")) == [
        "attack/print_sim/sim_print_astro.jpg",
        "attack/replay_sim/sim_replay_astro.jpg",
        "bona_fide/astro.jpg",
    ]
    assert load_pad_dataset(out).simulated


def test_eval_pad_command_prints_iso_figures_and_writes_the_det_curve(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, report = tmp_path / "sim", tmp_path / "report"
    with pytest.raises(SystemExit) as done:
        main(["eval", "simulate", str(data)])
    assert done.value.code == 0
    with pytest.raises(SystemExit) as done:
        main(["eval", "pad", str(data), "--out", str(report)])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert text.count(SIMULATION_BANNER) == 2
    for figure in (
        "APCER print_sim",
        "APCER replay_sim",
        "APCER (max)",
        "BPCER",
        "APCER at BPCER <= 5%",
        "APCER at BPCER <= 1%",
        "Recommended threshold",
    ):
        assert figure in text
    written = json.loads((report / "pad_report.json").read_text())
    assert written["simulation"] is True and written["notice"] == SIMULATION_BANNER
    assert written["metrics"]["bona_fide"] == 4
    assert (report / "pad_det.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "True" in (report / "pad_scores.csv").read_text()
