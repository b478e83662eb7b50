"""Labelled image sets for the evaluations: PAD folders (simple and CelebA-Spoof) and boxes.

PAD layouts, detected from the folder:
- simple: `bona_fide/**/<image>` and `attack/<type>/**/<image>` (the type is the PAI
  species, e.g. print, replay, mask).
- CelebA-Spoof: `Data/<split>/<subject>/{live,spoof}/<image>`, labelled by
  `metas/intra_test/<split>_label.json` when present (element 40 of each label is the
  spoof type, element 43 live/spoof), otherwise by the live/spoof folder alone.
A `SIMULATED.txt` file at the root marks a set made by `faceval eval simulate`: every
report on it says it is a simulation.

Face boxes: a JSON file {"image name": [[x, y, w, h], ...]} beside the images, or the
WIDER FACE ground-truth text format (name, count, then "x y w h ..." lines).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
SIMULATION_MARKER = "SIMULATED.txt"
#: CelebA-Spoof's spoof-type codes (label element 40).
CELEBA_SPOOF_TYPES = {
    1: "photo",
    2: "poster",
    3: "a4",
    4: "face_mask",
    5: "upper_body_mask",
    6: "region_mask",
    7: "pc",
    8: "pad",
    9: "phone",
    10: "3d_mask",
}

Label = Literal["bona_fide", "attack"]


@dataclass(frozen=True)
class PadSample:
    path: Path
    label: Label
    #: The PAI species for attacks; None for bona fide presentations.
    attack_type: str | None = None


@dataclass(frozen=True)
class PadDataset:
    root: Path
    layout: Literal["simple", "celeba_spoof"]
    samples: list[PadSample]
    simulated: bool


def _images(folder: Path) -> Iterator[Path]:
    if folder.is_dir():
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                yield path


def _simple(root: Path) -> list[PadSample]:
    samples = [PadSample(p, "bona_fide") for p in _images(root / "bona_fide")]
    attack_root = root / "attack"
    if attack_root.is_dir():
        for kind in sorted(p for p in attack_root.iterdir() if p.is_dir()):
            samples += [PadSample(p, "attack", kind.name) for p in _images(kind)]
    return samples


def _celeba(root: Path, split: str) -> list[PadSample]:
    labels = root / "metas" / "intra_test" / f"{split}_label.json"
    if labels.is_file():
        table: dict[str, list[int]] = json.loads(labels.read_text())
        samples = []
        for rel, label in sorted(table.items()):
            path = root / rel
            if label[43] == 0:
                samples.append(PadSample(path, "bona_fide"))
            else:
                samples.append(
                    PadSample(path, "attack", CELEBA_SPOOF_TYPES.get(label[40], "spoof"))
                )
        return samples
    data = root / "Data" / split
    samples = []
    for subject in sorted(p for p in data.iterdir() if p.is_dir()) if data.is_dir() else []:
        samples += [PadSample(p, "bona_fide") for p in _images(subject / "live")]
        samples += [PadSample(p, "attack", "spoof") for p in _images(subject / "spoof")]
    return samples


def load_pad_dataset(root: Path, split: str = "test", limit: int | None = None) -> PadDataset:
    """Read a PAD folder; `limit` keeps at most that many images per class and type."""
    if (root / "bona_fide").is_dir() or (root / "attack").is_dir():
        layout: Literal["simple", "celeba_spoof"] = "simple"
        samples = _simple(root)
    elif (root / "Data").is_dir() or (root / "metas").is_dir():
        layout = "celeba_spoof"
        samples = _celeba(root, split)
    else:
        raise ValueError(
            f"{root}: expected bona_fide/ and attack/<type>/ folders, or the CelebA-Spoof "
            "layout (Data/<split>/<subject>/live|spoof)"
        )
    if limit is not None:
        counts: dict[tuple[str, str | None], int] = {}
        kept = []
        for sample in samples:
            key = (sample.label, sample.attack_type)
            counts[key] = counts.get(key, 0) + 1
            if counts[key] <= limit:
                kept.append(sample)
        samples = kept
    return PadDataset(root, layout, samples, (root / SIMULATION_MARKER).is_file())


Box = tuple[float, float, float, float]


def load_boxes(labels: Path) -> dict[str, list[Box]]:
    """Face boxes per image name, from JSON or the WIDER FACE ground-truth format."""
    text = labels.read_text()
    if labels.suffix.lower() == ".json":
        data: dict[str, list[list[float]]] = json.loads(text)
        return {name: [_box(b) for b in boxes] for name, boxes in data.items()}
    boxes: dict[str, list[Box]] = {}
    lines = iter(line.strip() for line in text.splitlines() if line.strip())
    for name in lines:
        count = int(next(lines))
        # WIDER lists a dummy all-zero row for images with no face.
        rows = [next(lines).split() for _ in range(max(count, 1))]
        boxes[name] = [_box([float(v) for v in r[:4]]) for r in rows[:count]]
    return boxes


def _box(values: list[float]) -> Box:
    x, y, w, h = (float(v) for v in values[:4])
    return (x, y, w, h)
