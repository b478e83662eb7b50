"""The upload fuzz target holds its property on seeds and hostile inputs, and really fuzzes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
TARGET = ROOT / "fuzz" / "fuzz_upload.py"


def test_the_fuzz_target_runs_for_a_bounded_time_without_a_crash(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    corpus = tmp_path / "corpus"
    shutil.copytree(ROOT / "fuzz" / "corpus", corpus)
    done = subprocess.run(
        [sys.executable, str(TARGET), "-max_total_time=8", "-rss_limit_mb=2048",
         f"-artifact_prefix={tmp_path}/", str(corpus)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Done" in done.stderr
    assert not list(tmp_path.glob("crash-*"))
    assert len(list(corpus.iterdir())) > 3  # it found new inputs: it really explored
