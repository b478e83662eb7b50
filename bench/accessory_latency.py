"""Accessory classifier latency on one core: milliseconds per image, alignment included.

    python -m bench.accessory_latency [--reps 200]

Pins the process to one CPU and one ONNX Runtime thread (as a worker runs), builds the
accessory stage's classifier from the committed weights, and times on the astronaut
portrait (512x512) and on the large group photo t1.jpg (1280x886, so the anti-alias blur
of the alignment is included): the alignment alone and the whole `analyze`. Also times
the heuristics, which the stage still runs (reported, not deciding). Numbers from a busy
machine are not latencies: run it alone.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def _timed(fn: Callable[[], object], reps: int) -> tuple[float, float]:
    fn()
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.95 * (len(times) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    import onnxruntime as ort
    import retinaface.weights
    import skimage.data

    from services.accessory.classifier import align
    from services.accessory.stage import build_models
    from services.face_detector.model import detect_faces
    from shared.settings import Settings
    from tools.synth.accessories import package_image

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(model_dir=Path(tmp), onnx_intra_op_threads=1, onnx_inter_op_threads=1)
        classifier, heuristics = build_models(settings)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    detector = ort.InferenceSession(retinaface.weights.WEIGHTS, options)
    images = {
        "astronaut 512x512": np.ascontiguousarray(skimage.data.astronaut()),  # type: ignore[no-untyped-call]
        "t1.jpg 1280x886": package_image("t1.jpg"),
    }
    print(f"{'image':<20} {'part':<22} {'median ms':>10} {'p95 ms':>8}")
    for name, image in images.items():
        face = detect_faces(detector, image)[0]
        rows = {
            "align": lambda im=image, f=face: align(im, f.landmarks),
            "classifier (analyze)": lambda im=image, f=face: classifier.analyze(im, f),
            "heuristics (reported)": lambda im=image, f=face: heuristics.analyze(im, f),
        }
        for part, fn in rows.items():
            median, p95 = _timed(fn, args.reps)
            print(f"{name:<20} {part:<22} {median:>10.2f} {p95:>8.2f}")


if __name__ == "__main__":
    main()
