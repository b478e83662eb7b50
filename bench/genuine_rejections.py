"""How many genuine single-face photos each framing and quality rule rejects.

Every photo is one genuine capture used as both near and far, so the detector stage
(framing + head pose) and the quality stage run once on it with the production models
(each stage's `build_models(settings)` through `shared.runtime.analyze_image`). Counted
per rule (`code/subject`), per stage and for the two stages together; the accessory and
later stages are not run here (the lead's `faceval eval pipeline` covers them).

    python -m bench.genuine_rejections [FOLDER ...] [--half even|odd|all] [--json OUT]

Folders default to `../shared/data/masks/without_mask` and `../shared/data/lfw-fold0`
beside the repository. Run with one thread (OMP_NUM_THREADS=1) for the per-image times.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from shared.analysis import Model
from shared.imaging import decode_rgb
from shared.settings import Settings
from tools.eval.calibrate import run_models

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_FOLDERS = (
    ROOT.parent / "shared" / "data" / "masks" / "without_mask",
    ROOT.parent / "shared" / "data" / "lfw-fold0",
)
SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


def photos(folder: Path, half: str) -> list[Path]:
    """Sorted photos; `half` keeps the even or odd positions (the calibrate split)."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES)
    if half == "all":
        return paths
    return paths[0 if half == "even" else 1 :: 2]


def rule(reason: tuple[str, str | None]) -> str:
    return f"{reason[0]}/{reason[1]}" if reason[1] else reason[0]


def run_folder(
    folder: Path, detector: list[Model], quality: list[Model], half: str
) -> dict[str, Any]:
    per_rule: Counter[str] = Counter()
    stage_rejects: Counter[str] = Counter()
    examples: dict[str, list[str]] = {}
    quality_ms: list[float] = []
    paths = photos(folder, half)
    for path in paths:
        image = decode_rgb(path.read_bytes())
        reasons, _, face = run_models(detector, image, None)
        rejected = bool(reasons)
        if rejected:
            stage_rejects["face_detector"] += 1
        for reason in reasons:
            per_rule[rule(reason)] += 1
            examples.setdefault(rule(reason), []).append(path.name)
        if face is None:
            stage_rejects["any"] += 1
            continue
        started = time.perf_counter()
        q_reasons, _, _ = run_models(quality, image, face)
        quality_ms.append((time.perf_counter() - started) * 1000)
        if q_reasons:
            stage_rejects["quality"] += 1
            if not rejected:
                stage_rejects["quality_after_framing"] += 1
        for reason in q_reasons:
            per_rule[rule(reason)] += 1
            examples.setdefault(rule(reason), []).append(path.name)
        if rejected or q_reasons:
            stage_rejects["any"] += 1
    times = np.asarray(quality_ms) if quality_ms else np.zeros(1)
    return {
        "folder": str(folder),
        "images": len(paths),
        "per_rule": dict(per_rule.most_common()),
        "stages": dict(stage_rejects),
        "quality_ms_p50": float(np.percentile(times, 50)),
        "quality_ms_p95": float(np.percentile(times, 95)),
        "examples": {k: v[:8] for k, v in examples.items()},
    }


def render(result: dict[str, Any]) -> str:
    n = result["images"]
    lines = [f"{result['folder']}: {n} genuine photos"]
    for name, count in result["per_rule"].items():
        lines.append(f"  {name:<34}{count:>5}  {count / n:6.1%}")
    stages = result["stages"]
    for key in ("face_detector", "quality", "quality_after_framing", "any"):
        count = stages.get(key, 0)
        lines.append(f"  stage {key:<28}{count:>5}  {count / n:6.1%}")
    lines.append(
        f"  quality stage ms/image p50 {result['quality_ms_p50']:.0f}, "
        f"p95 {result['quality_ms_p95']:.0f}"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folders", nargs="*", type=Path)
    parser.add_argument("--half", choices=("even", "odd", "all"), default="all")
    parser.add_argument("--json", type=Path, help="also write the counts here")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    folders = args.folders or [f for f in DEFAULT_FOLDERS if f.is_dir()]
    if not folders:
        raise SystemExit(f"no photo folder given and none found at {DEFAULT_FOLDERS}")
    from services.face_detector.stage import build_models as detector_models
    from services.quality.stage import build_models as quality_models

    settings = Settings()
    detector, quality = list(detector_models(settings)), list(quality_models(settings))
    results = [run_folder(folder, detector, quality, args.half) for folder in folders]
    for result in results:
        print(render(result))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
