"""Evaluate the accessory stage as production runs it: face_detector stage, then accessory.

    .venv/bin/python -m tools.eval.accessory --shared ../shared --json build/accessory/eval.json

- masks (both classes, every image; the training split rule says which were trained on)
  and LFW fold 0, through the production stages in process (`tools.stages`, the workers'
  decision function and default policy): per class and split, how many had no face, were
  stopped by the detector stage, and were rejected by the accessory stage and why. Where
  the detector stage rejected a found face (framing, pose), the accessory stage is also
  run on that face, so "flagged" covers every image with a face;
- synthetic cases on the package sample faces (astronaut, Tom Hanks, the six faces of
  t1.jpg): insightface's mask textures, opaque masks, sunglasses (must all be rejected),
  and the plain faces (must pass).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from shared.analysis import Face, Image, Model
from shared.imaging import decode_rgb
from shared.pipeline import InProcessPipeline, Policy, StageDefinition, analyze_image
from shared.settings import Settings
from tools.synth import accessories

Renderer = Callable[[Image, Face], Image]


class Judge:
    """The detector and accessory stages in process, with the default policy."""

    def __init__(self, settings: Settings) -> None:
        from tools.stages import in_process_pipeline

        self.pipeline: InProcessPipeline = in_process_pipeline(settings, until="accessory")
        self.policy = Policy.build(settings)
        self.accessory: tuple[StageDefinition, Sequence[Model]] = self.pipeline.stages[1]
        detector_models = self.pipeline.stages[0][1]
        self.detector_session = getattr(detector_models[0], "session", None)

    def accessory_rejections(self, image: Image, face: Face) -> list[str]:
        """The accessory stage's rejecting subjects for this face (policy applied)."""
        definition, models = self.accessory
        record = analyze_image(definition, models, image, face, self.policy).record
        return sorted(str(r["subject"]) for r in record.reasons)

    def __call__(self, image: Image) -> dict[str, Any]:
        run = self.pipeline.run({"near": image, "far": image}, self.policy)
        detector = run.stages["face_detector"].records["near"]
        if detector.face is None:
            return {"outcome": "no_face"}
        verdict: dict[str, Any] = {"outcome": "face", "summary": run.summary.reason}
        if "accessory" in run.stages:
            record = run.stages["accessory"].records["near"]
            verdict["rejected"] = sorted(str(r["subject"]) for r in record.reasons)
            verdict["reported"] = sorted(str(n["subject"]) for n in record.notes)
        else:  # stopped by the detector stage: what the accessory stage would say
            verdict["detector_rejected"] = True
            verdict["rejected"] = self.accessory_rejections(image, detector.face)
        return verdict

    def faces(self, image: Image) -> list[Face]:
        from services.face_detector.model import detect_faces

        if self.detector_session is None:
            raise RuntimeError("the sample check needs the RetinaFace detector")
        return detect_faces(self.detector_session, image)


def _rate(part: int, whole: int) -> dict[str, Any]:
    return {"n": part, "of": whole, "pct": round(100.0 * part / whole, 2) if whole else None}


def evaluate_folder(judge: Judge, files: Sequence[tuple[Path, str, str]]) -> dict[str, Any]:
    """files: (path, group, split). Rates per group and split, and per group overall."""
    tallies: dict[str, Counter[str]] = defaultdict(Counter)
    for path, group, split in files:
        verdict = judge(decode_rgb(path.read_bytes()))
        for key in (f"{group}/all", f"{group}/{split}"):
            tally = tallies[key]
            tally["images"] += 1
            if verdict["outcome"] == "no_face":
                tally["no_face"] += 1
                continue
            tally["face"] += 1
            tally[f"summary:{verdict['summary']}"] += 1
            tally["detector_rejected"] += bool(verdict.get("detector_rejected"))
            tally["accessory_flagged"] += bool(verdict["rejected"])
            for name in verdict["rejected"]:
                tally[f"flagged:{name}"] += 1
            for name in verdict.get("reported", []):
                tally[f"reported:{name}"] += 1
    out: dict[str, Any] = {}
    for key, tally in sorted(tallies.items()):
        row: dict[str, Any] = {"images": tally["images"],
                               "no_face": _rate(tally["no_face"], tally["images"])}  # fmt: skip
        for name, value in sorted(tally.items()):
            if name not in ("images", "no_face", "face"):
                row[name] = _rate(value, tally["face"])
        out[key] = row
    return out


def sample_faces() -> list[tuple[str, Image]]:
    """The package photos the synthetic cases are painted on (t1.jpg has six faces)."""
    from skimage import data

    return [
        ("astronaut", np.ascontiguousarray(data.astronaut())),  # type: ignore[no-untyped-call]
        ("tom_hanks", accessories.package_image("Tom_Hanks_54745.png")),
        ("t1", accessories.package_image("t1.jpg")),
    ]


def _box(texture: Image) -> Renderer:
    return lambda im, f: accessories.box_mask(im, f.landmarks, texture)


def _opaque(colour: tuple[float, float, float]) -> Renderer:
    return lambda im, f: accessories.opaque_mask(im, f.landmarks, colour)


def _random(kind: str, seed: int) -> Renderer:
    return lambda im, f: accessories.render(im, f.landmarks, kind, seed)


def sample_cases() -> list[tuple[str, bool, Renderer]]:
    """(name, must be rejected, renderer) drawn on every sample face."""
    cases: list[tuple[str, bool, Renderer]] = [("plain", False, lambda im, f: im)]
    for i, texture in enumerate(accessories.mask_textures()):
        cases.append((f"box_mask_texture{i}", True, _box(texture)))
    for name, colour in (("black", (0, 0, 0)), ("white", (240, 240, 240)),
                         ("blue", (140, 190, 230))):  # fmt: skip
        cases.append((f"opaque_mask_{name}", True, _opaque(colour)))
    cases.append(
        ("dark_sunglasses", True, lambda im, f: accessories.dark_sunglasses(im, f.landmarks))
    )
    for seed in range(5):
        cases.append((f"mask_seed{seed}", True, _random("face_mask", 1000 + seed)))
        cases.append((f"sunglasses_seed{seed}", True, _random("sunglasses", 2000 + seed)))
    return cases


def _nearest(faces: Sequence[Face], target: Face) -> Face | None:
    cx, cy = target.x + target.width / 2, target.y + target.height / 2
    near = [f for f in faces if abs(f.x + f.width / 2 - cx) < target.width / 2
            and abs(f.y + f.height / 2 - cy) < target.height / 2]  # fmt: skip
    return min(near, key=lambda f: abs(f.x - target.x) + abs(f.y - target.y), default=None)


def evaluate_samples(judge: Judge) -> dict[str, Any]:
    """Every case on every sample face. The accessory stage judges the painted image with
    the face found again on it (as production would) and with the original landmarks; a
    case is right only when both agree with what it must be."""
    results: dict[str, Any] = {}
    for face_name, image in sample_faces():
        for index, face in enumerate(judge.faces(image)):
            for case, must_reject, draw in sample_cases():
                drawn = draw(image, face)
                again = _nearest(judge.faces(drawn), face)
                verdicts: dict[str, list[str] | None] = {
                    "redetected": judge.accessory_rejections(drawn, again) if again else None,
                    "original": judge.accessory_rejections(drawn, face),
                }
                judged = [v for v in verdicts.values() if v is not None]
                results[f"{face_name}#{index}/{case}"] = {
                    "expected_reject": must_reject,
                    "ok": all(bool(v) == must_reject for v in judged),
                    **verdicts,
                }
    return results


def mask_files(shared: Path) -> list[tuple[Path, str, str]]:
    from tools.train.accessory import split_of

    files = []
    for cls in ("with_mask", "without_mask"):
        for path in sorted((shared / "data" / "masks" / cls).glob("*.jpg")):
            files.append((path, cls, split_of(f"{cls}/{path.name}")))
    for path in sorted((shared / "data" / "lfw-fold0").glob("*/*.jpg")):
        files.append((path, "lfw", split_of(f"lfw/{path.parent.name}")))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shared", type=Path, default=Path("../shared"))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--skip-data", action="store_true", help="only the sample faces")
    args = parser.parse_args()
    judge = Judge(Settings())
    report: dict[str, Any] = {"samples": evaluate_samples(judge)}
    wrong = [k for k, v in report["samples"].items() if not v["ok"]]
    print(f"sample cases: {len(report['samples'])}, wrong: {len(wrong)} {wrong}")
    if not args.skip_data:
        report["data"] = evaluate_folder(judge, mask_files(args.shared))
        for key, row in report["data"].items():
            print(key, json.dumps(row))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
