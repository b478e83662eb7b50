"""A stage's analysis in child processes, for models that hold the GIL while they compute.

dlib's network (the identity stage) keeps the GIL for its whole forward pass, so a worker's
two task threads would take turns: near then far. Each child here has its own interpreter
and its own copy of the stage's models (built once, by the child, from the definition), and
takes the JPEG bytes, decodes them and runs `shared.pipeline.analyze_image` as a task
thread would. The parent keeps everything else (Redis, MongoDB, publishing, metrics).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from shared.analysis import Face, Model
from shared.imaging import decode_rgb
from shared.pipeline import Analysis, Policy, StageDefinition, analyze_image
from shared.settings import Settings

__all__ = ["AnalysisPool", "BrokenProcessPool"]

# --- in the child ------------------------------------------------------------------------------

_definition: StageDefinition | None = None
_models: Sequence[Model] = ()


def _start_child(definition: StageDefinition, settings: Settings, parent: int) -> None:
    global _definition, _models
    # The worker's pid comes from the worker itself: one that died before this child got
    # here has already left it to another parent.
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()
    _definition = definition
    _models = definition.build_models(settings)


def _exit_with_parent(parent: int) -> None:
    """A worker killed outright (SIGKILL, the OOM killer) cannot stop its children: each
    watches for it and leaves instead of waiting for work forever."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


def _ready() -> int:
    return os.getpid()


def _analyze(data: bytes, face: Mapping[str, Any] | None, policy: Policy) -> tuple[Analysis, int]:
    assert _definition is not None, "the child was not started with a stage"
    started = time.perf_counter_ns()
    image = decode_rgb(data)
    decode_ns = time.perf_counter_ns() - started
    found = Face.from_dict(face) if face else None
    return analyze_image(_definition, _models, image, found, policy), decode_ns


# --- in the worker -----------------------------------------------------------------------------


class AnalysisPool:
    """`processes` children analysing images of one stage; thread-safe."""

    def __init__(self, definition: StageDefinition, settings: Settings, processes: int) -> None:
        self._definition = definition
        self._settings = settings
        self._processes = processes
        self._lock = threading.Lock()
        self._executor = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn: the worker has threads (Celery's, the clients'), which fork must not copy.
        executor = ProcessPoolExecutor(
            self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_child,
            initargs=(self._definition, self._settings, os.getpid()),
        )
        # Start every child and build its models now, not on the first jobs; a model that
        # cannot load fails here, at the worker's start.
        for future in wait([executor.submit(_ready) for _ in range(self._processes)]).done:
            future.result()
        return executor

    def analyze(
        self, data: bytes, face: Mapping[str, Any] | None, policy: Policy
    ) -> tuple[Analysis, int]:
        """(the image's analysis, the decode's nanoseconds). A child that died (killed, or
        crashed in native code) raises BrokenProcessPool once; the pool is restarted."""
        executor = self._executor
        try:
            return executor.submit(_analyze, data, face, policy).result()
        except BrokenProcessPool:
            with self._lock:
                if self._executor is executor:
                    executor.shutdown(wait=False, cancel_futures=True)
                    self._executor = self._start()
            raise

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
