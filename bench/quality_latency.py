"""The quality stage's time per image (p50/p95, ms) on one thread, per model and in all.

Runs the production quality models (`services.quality.stage.build_models`) on the face
the production detector stage hands on, as a worker does. Photos: the genuine real
photos beside the repository (`../shared/data/masks/without_mask` and
`../shared/data/lfw-fold0`, every `--every`th) when present, the bundled sample pairs
otherwise; `--upscale 4` also times 4x enlarged copies (phone-size captures).

    OMP_NUM_THREADS=1 python -m bench.quality_latency [--every 10] [--upscale 4]

Times measured while other jobs share the cores are not trustworthy: rerun on an idle
machine before quoting them.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from shared.analysis import Image, ModelUnavailable
from shared.imaging import decode_rgb
from shared.settings import Settings
from tools.eval.calibrate import run_models

ROOT = Path(__file__).resolve().parent.parent
REAL = (
    ROOT.parent / "shared" / "data" / "masks" / "without_mask",
    ROOT.parent / "shared" / "data" / "lfw-fold0",
)


def images(every: int) -> Iterator[tuple[str, Image]]:
    folders = [f for f in REAL if f.is_dir()]
    if not folders:
        from tools.samples import SAMPLES

        for sample in SAMPLES:
            for side, image in zip(("near", "far"), sample.make(), strict=True):
                yield f"{sample.name}_{side}", image
        return
    for folder in folders:
        paths = sorted(p for p in folder.rglob("*.jpg"))
        for path in paths[::every]:
            yield path.name, decode_rgb(path.read_bytes())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--every", type=int, default=10, help="every Nth real photo")
    parser.add_argument("--upscale", type=float, default=1.0, help="also time enlarged copies")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    from services.face_detector.stage import build_models as detector_models
    from services.quality.stage import build_models as quality_models

    settings = Settings(onnx_intra_op_threads=1, onnx_inter_op_threads=1)
    detector, quality = detector_models(settings), quality_models(settings)
    scales = [1.0] + ([args.upscale] if args.upscale != 1.0 else [])
    for scale in scales:
        per_model: dict[str, list[float]] = defaultdict(list)
        totals: list[float] = []
        for _, image in images(args.every):
            if scale != 1.0:
                image = np.asarray(
                    cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC),
                    np.uint8,
                )
            _, _, face = run_models(detector, image, None)
            if face is None:
                continue
            total = 0.0
            for model in quality:
                started = time.perf_counter()
                try:
                    model.analyze(image, face)
                except ModelUnavailable:
                    continue
                elapsed = (time.perf_counter() - started) * 1000
                per_model[model.key].append(elapsed)
                total += elapsed
            totals.append(total)
        print(f"scale {scale:g}: {len(totals)} images with a face, one thread")
        for key, values in [*per_model.items(), ("quality stage", totals)]:
            p50, p95 = np.percentile(values, [50, 95])
            print(f"  {key:<24} p50 {p50:6.1f} ms   p95 {p95:6.1f} ms")


if __name__ == "__main__":
    main()
