"""Stages whose models hold the GIL run in child processes: same analysis, a dead child
replaced, and no child outliving a worker killed outright."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import psutil
import pytest

from shared.analysis import Face, Image, Model, ModelInfo, ModelResult
from shared.analysis_pool import AnalysisPool, BrokenProcessPool
from shared.imaging import encode_jpeg
from shared.pipeline import Policy, StageDefinition
from shared.settings import Settings


@dataclass(frozen=True)
class WhoAmI:
    """Says which process analysed the image, and what it saw."""

    key: str = "whoami"
    info: ModelInfo = field(default=ModelInfo(name="whoami", version="1"))

    def analyze(self, image: Image, face: Face | None) -> ModelResult:
        return ModelResult(scores={"pid": float(os.getpid()), "height": float(image.shape[0])})


def build_whoami(_: Settings) -> Sequence[Model]:
    return [WhoAmI()]


STAGE = StageDefinition(name="identity", build_models=build_whoami, needs_face=False,
                        holds_gil=True)  # fmt: skip
JPEG = encode_jpeg(np.full((48, 64, 3), 128, dtype=np.uint8))


@pytest.fixture
def pool() -> Iterator[AnalysisPool]:
    pool = AnalysisPool(STAGE, Settings(), processes=2)
    yield pool
    pool.close()


def _pid_of(pool: AnalysisPool) -> int:
    analysis, decode_ns = pool.analyze(JPEG, None, Policy.build(Settings()))
    assert decode_ns > 0
    values = analysis.record.values("whoami")
    assert analysis.record.verdict == "pass" and values["height"] == 48.0
    return int(values["pid"])


def test_analyses_run_in_child_processes(pool: AnalysisPool) -> None:
    pids = {_pid_of(pool) for _ in range(6)}
    assert os.getpid() not in pids
    assert pids <= {c.pid for c in psutil.Process().children(recursive=True)}


def test_a_child_that_dies_fails_its_job_once_and_is_replaced(pool: AnalysisPool) -> None:
    os.kill(_pid_of(pool), signal.SIGKILL)
    time.sleep(0.5)
    with pytest.raises(BrokenProcessPool):
        _pid_of(pool)
    assert _pid_of(pool) > 0  # a new child


def test_children_leave_when_their_worker_is_killed_outright() -> None:
    script = textwrap.dedent("""
        import time
        from shared.settings import Settings
        from tests.unit.test_analysis_pool import STAGE
        from shared.analysis_pool import AnalysisPool
        AnalysisPool(STAGE, Settings(), processes=2)
        print("ready", flush=True)
        time.sleep(60)
    """)
    worker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "ready"
        children = psutil.Process(worker.pid).children(recursive=True)
        assert children
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
        _, alive = psutil.wait_procs(children, timeout=30)
        assert not alive, f"children outlived their worker: {alive}"
    finally:
        if worker.poll() is None:
            worker.kill()
