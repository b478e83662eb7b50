"""Identity model latency on one core: milliseconds per face, with and without the mirror.

    python -m bench.identity_latency [--reps 30]

Pins the process to one CPU and one native thread (as a worker runs), builds the
production embedder (`services.identity.stage.build_embedder`), and times, on the
astronaut portrait's detected face: the alignment alone, one descriptor, and the whole
`analyze` (align + descriptor, + the mirrored chip's descriptor when flip averaging is
on). Also prints the resident memory the model adds. Numbers from a busy machine are not
latencies: run it alone.
"""

from __future__ import annotations

import os

# Before dlib and NumPy load their thread pools.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import skimage.data  # noqa: E402

from shared.models_registry import BUNDLED_MANIFEST  # noqa: E402
from shared.settings import Settings  # noqa: E402


def _rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _timed(fn: Callable[[], object], reps: int) -> tuple[float, float, float]:
    """Wall median and p90, and the median CPU time of this thread (ms).

    CPU time is what the model costs when other processes share the core; wall time is
    the latency only on an idle machine.
    """
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(reps):
        wall, cpu = time.perf_counter(), time.thread_time()
        fn()
        cpus.append(1000 * (time.thread_time() - cpu))
        walls.append(1000 * (time.perf_counter() - wall))
    walls.sort()
    return statistics.median(walls), walls[int(0.9 * (len(walls) - 1))], statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=30)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    from services.face_detector.stage import build_models as detector_models
    from services.identity.embedder import DlibResNetEmbedder, align
    from services.identity.stage import build_embedder

    with tempfile.TemporaryDirectory() as models:
        settings = Settings(model_dir=Path(models), model_manifest=BUNDLED_MANIFEST)
        portrait = skimage.data.astronaut()  # type: ignore[no-untyped-call]
        image = np.asarray(portrait, dtype=np.uint8)
        face = detector_models(settings)[0].analyze(image, None).face
        assert face is not None
        before = _rss_mb()
        embedder = build_embedder(settings)
        assert isinstance(embedder, DlibResNetEmbedder)
        loaded = _rss_mb()
        chip = align(image, face, embedder.alignment)
        rows = [
            ("align template5", _timed(lambda: align(image, face, "template5"), args.reps)),
            ("align dlib5", _timed(lambda: align(image, face, "dlib5"), args.reps)),
            ("descriptor (one chip)", _timed(lambda: embedder.describe(chip), args.reps)),
        ]
        for flip in (False, True):
            embedder.flip_average = flip
            label = f"analyze, mirror {'on' if flip else 'off'}"
            rows.append((label, _timed(lambda: embedder.analyze(image, face), args.reps)))
        used = _rss_mb()
    print(f"identity model on one core, {args.reps} runs (ms: wall median / p90, CPU median)")
    for label, (median, p90, cpu) in rows:
        print(f"  {label:<24} {median:8.1f} / {p90:8.1f}   {cpu:8.1f}")
    print(f"  RSS: +{loaded - before:.0f} MB loading the model, +{used - before:.0f} MB after use")


if __name__ == "__main__":
    main()
