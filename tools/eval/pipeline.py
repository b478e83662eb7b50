"""`faceval eval pipeline DIR`: the production decisions on a labelled folder of photos.

Every photo goes through the workers' own stages and decision function in process
(`shared.pipeline.InProcessPipeline`, built from `tools.stages`): near = the photo, far = the
photo itself or the real far image a CSV names. The report gives, per label, how the
pipeline decided; for genuine faces the false rejections with the rule and the score that
tripped; per accessory and attack type the recall and the false-positive rate on genuine
faces; and the confusion table of label against decided_by/reason.

Labels come from folder names (the nearest folder whose name is a label or an alias:
`with_mask` = mask, `without_mask` = genuine, `bona_fide` = genuine, `real` = genuine) or
from a CSV (`path,label[,far]`, paths relative to the CSV).
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shared.imaging import decode_rgb
from shared.pipeline import InProcessPipeline, PipelineRun
from shared.settings import get_settings
from tools.eval.datasets import IMAGE_SUFFIXES

LABELS = (
    "genuine", "mask", "sunglasses", "glasses", "hat", "print", "screen", "multiple", "no_face",
)  # fmt: skip
ALIASES = {
    "with_mask": "mask",
    "without_mask": "genuine",
    "bona_fide": "genuine",
    "bonafide": "genuine",
    "real": "genuine",
    "live": "genuine",
    "replay": "screen",
    "multiple_faces": "multiple",
}
#: What the pipeline should answer for each label: (decided_by, summary reasons accepted).
EXPECTED: dict[str, tuple[str | None, frozenset[str]]] = {
    "genuine": (None, frozenset({"accepted"})),
    "mask": ("accessory", frozenset({"face_mask"})),
    "sunglasses": ("accessory", frozenset({"sunglasses"})),
    "hat": ("accessory", frozenset({"hat"})),
    "glasses": (None, frozenset({"accepted", "glasses"})),  # reported only by default
    "print": ("pad", frozenset({"spoof_detected"})),
    "screen": ("pad", frozenset({"spoof_detected"})),
    "multiple": ("face_detector", frozenset({"multiple_faces"})),
    "no_face": ("face_detector", frozenset({"no_face"})),
}
ACCESSORIES = ("face_mask", "sunglasses", "glasses", "hat")
LABEL_OF_ACCESSORY = {"face_mask": "mask", "sunglasses": "sunglasses", "glasses": "glasses",
                      "hat": "hat"}  # fmt: skip
ATTACKS = ("print", "screen")
DOCS_BEGIN = "<!-- eval-pipeline:begin -->"
DOCS_END = "<!-- eval-pipeline:end -->"


@dataclass(frozen=True)
class Sample:
    path: Path
    label: str
    far: Path | None = None


@dataclass
class Outcome:
    path: str
    label: str
    reason: str
    decided_by: str | None
    #: The rejections (or error) that ended it: code, subject, detail, stage.
    reasons: list[dict[str, Any]] = field(default_factory=list)
    #: Accessories the accessory stage found on the near image (rejections and notes).
    accessories: list[str] = field(default_factory=list)
    seconds: float = 0.0


def label_of(relative: Path) -> str | None:
    for part in reversed(relative.parts[:-1]):
        name = part.lower()
        name = ALIASES.get(name, name)
        if name in LABELS:
            return name
    return None


def load_samples(
    root: Path, labels_csv: Path | None = None, default_label: str | None = None
) -> list[Sample]:
    if labels_csv is not None:
        base = labels_csv.parent
        with labels_csv.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        samples = []
        for row in rows:
            label = ALIASES.get(row["label"].strip().lower(), row["label"].strip().lower())
            if label not in LABELS:
                raise ValueError(f"{labels_csv}: unknown label {row['label']!r}")
            far = row.get("far") or None
            samples.append(Sample(base / row["path"], label, base / far if far else None))
        return samples
    samples = []
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        label = label_of(path.relative_to(root)) or default_label
        if label is not None:
            samples.append(Sample(path, label))
    return samples


def limited(samples: Sequence[Sample], limit: int | None, seed: int) -> list[Sample]:
    if limit is None:
        return list(samples)
    by_label: dict[str, list[Sample]] = defaultdict(list)
    for sample in samples:
        by_label[sample.label].append(sample)
    rng = random.Random(seed)
    chosen: list[Sample] = []
    for label in sorted(by_label):
        group = by_label[label]
        chosen.extend(rng.sample(group, min(limit, len(group))))
    return sorted(chosen, key=lambda s: str(s.path))


def outcome_of(sample: Sample, run: PipelineRun, seconds: float) -> Outcome:
    found: list[str] = []
    accessory = run.stages.get("accessory")
    if accessory is not None:
        record = accessory.records["near"]
        for item in (*record.reasons, *record.notes):
            name = item.get("subject") if item.get("subject") in ACCESSORIES else item.get("code")
            if name in ACCESSORIES and name not in found:
                found.append(str(name))
    reasons = [
        {k: r.get(k) for k in ("stage", "code", "subject", "detail", "image")} for r in run.reasons
    ]
    return Outcome(str(sample.path), sample.label, run.summary.reason, run.decided_by,
                   reasons, found, round(seconds, 4))  # fmt: skip


_PIPELINE: InProcessPipeline | None = None


def _evaluate_one(sample: Sample) -> Outcome:
    """One sample in this process (a worker of the pool keeps its models loaded)."""
    global _PIPELINE
    if _PIPELINE is None:
        from tools.stages import in_process_pipeline

        _PIPELINE = in_process_pipeline(get_settings())
    started = time.perf_counter()
    near = decode_rgb(sample.path.read_bytes())
    far = decode_rgb(sample.far.read_bytes()) if sample.far else near
    run = _PIPELINE.run({"near": near, "far": far})
    return outcome_of(sample, run, time.perf_counter() - started)


def evaluate(samples: Sequence[Sample], jobs: int = 1) -> Iterator[Outcome]:
    if jobs <= 1:
        yield from map(_evaluate_one, samples)
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield from pool.map(_evaluate_one, samples, chunksize=8)


def _rate(hits: int, total: int) -> float | None:
    return round(hits / total, 4) if total else None


def _example(outcome: Outcome) -> dict[str, Any]:
    first = outcome.reasons[0] if outcome.reasons else {}
    rule = _rule(first) if first else outcome.reason
    return {"path": outcome.path, "rule": rule, "detail": first.get("detail")}


def _rule(reason: Mapping[str, Any]) -> str:
    subject = reason.get("subject")
    return f"{reason.get('stage')}/{reason.get('code')}" + (f"[{subject}]" if subject else "")


def summarise(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    by_label: dict[str, list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_label[outcome.label].append(outcome)
    report: dict[str, Any] = {"counts": {k: len(v) for k, v in sorted(by_label.items())}}

    genuine = by_label.get("genuine", [])
    rejected = [o for o in genuine if o.reason != "accepted"]
    rules: Counter[str] = Counter(_rule(r) for o in rejected for r in o.reasons[:1])
    report["genuine"] = {
        "total": len(genuine),
        "false_rejections": len(rejected),
        "frr": _rate(len(rejected), len(genuine)),
        "frr_face_found": _rate(
            len([o for o in rejected if o.reason != "no_face"]),
            len([o for o in genuine if o.reason != "no_face"]),
        ),
        "by_rule": dict(rules.most_common()),
        "examples": [_example(o) for o in rejected[:40]],
    }

    accessory_rows = {}
    reached = [o for o in genuine if o.reason != "no_face"]
    for accessory in ACCESSORIES:
        label = LABEL_OF_ACCESSORY[accessory]
        positives = [o for o in by_label.get(label, []) if o.reason != "no_face"]
        detected = [o for o in positives if accessory in o.accessories]
        rejected_as = [
            o for o in positives if o.reason == accessory and o.decided_by == "accessory"
        ]
        false_pos = [o for o in reached if accessory in o.accessories]
        accessory_rows[accessory] = {
            "label": label,
            "with_face_found": len(positives),
            "not_found_by_detector": len(by_label.get(label, [])) - len(positives),
            "recall_detected": _rate(len(detected), len(positives)),
            "recall_rejected_with_reason": _rate(len(rejected_as), len(positives)),
            "false_positive_rate_on_genuine": _rate(len(false_pos), len(reached)),
        }
    report["accessories"] = accessory_rows

    attack_rows = {}
    for attack in ATTACKS:
        items = by_label.get(attack, [])
        caught = [o for o in items if o.reason == "spoof_detected"]
        attack_rows[attack] = {
            "total": len(items),
            "rejected_by_pad": len(caught),
            "rejected_anywhere": len([o for o in items if o.reason != "accepted"]),
            "apcer_pipeline": _rate(len([o for o in items if o.reason == "accepted"]), len(items)),
        }
    report["attacks"] = attack_rows

    confusion: dict[str, dict[str, int]] = {}
    for label, items in sorted(by_label.items()):
        counts = Counter(f"{o.decided_by or 'all stages'}/{o.reason}" for o in items)
        confusion[label] = dict(counts.most_common())
    report["confusion"] = confusion
    report["expected"] = {
        label: {
            "total": len(items),
            "as_expected": len([o for o in items if _as_expected(o)]),
            "rate": _rate(len([o for o in items if _as_expected(o)]), len(items)),
        }
        for label, items in sorted(by_label.items())
    }
    seconds = sorted(o.seconds for o in outcomes)
    report["seconds_per_photo_p50"] = seconds[len(seconds) // 2] if seconds else None
    return report


def _as_expected(outcome: Outcome) -> bool:
    stage, reasons = EXPECTED[outcome.label]
    if outcome.reason not in reasons:
        return False
    return stage is None or outcome.reason == "accepted" or outcome.decided_by == stage


def render(report: Mapping[str, Any], source: str) -> str:
    lines = [f"Decisions on {source} (near = far = the photo unless a far image is given)", ""]
    lines.append("| label | photos | as expected | rate |")
    lines.append("|---|---|---|---|")
    for label, row in report["expected"].items():
        lines.append(f"| {label} | {row['total']} | {row['as_expected']} | {_pct(row['rate'])} |")
    genuine = report["genuine"]
    if genuine["total"]:
        lines += ["", f"Genuine faces: {genuine['false_rejections']} of {genuine['total']} "
                  f"falsely rejected (FRR {_pct(genuine['frr'])}; "
                  f"{_pct(genuine['frr_face_found'])} where a face was found)."]  # fmt: skip
        if genuine["by_rule"]:
            lines += ["", "| rule that rejected a genuine face | photos |", "|---|---|"]
            lines += [f"| {rule} | {n} |" for rule, n in genuine["by_rule"].items()]
    lines += ["", "| accessory | positives (face found) | detected | rejected with its reason "
              "| false positives on genuine |", "|---|---|---|---|---|"]  # fmt: skip
    for name, row in report["accessories"].items():
        if row["with_face_found"] or row["false_positive_rate_on_genuine"]:
            lines.append(
                f"| {name} | {row['with_face_found']} | {_pct(row['recall_detected'])} | "
                f"{_pct(row['recall_rejected_with_reason'])} | "
                f"{_pct(row['false_positive_rate_on_genuine'])} |"
            )
    attacks = {k: v for k, v in report["attacks"].items() if v["total"]}
    if attacks:
        lines += [
            "",
            "| attack | photos | rejected by PAD | accepted (APCER) |",
            "|---|---|---|---|",
        ]
        for name, row in attacks.items():
            lines.append(f"| {name} | {row['total']} | {row['rejected_by_pad']} | "
                         f"{_pct(row['apcer_pipeline'])} |")  # fmt: skip
    lines += ["", "Confusion (label: decided_by/reason = photos):"]
    for label, counts in report["confusion"].items():
        cells = ", ".join(f"{k} = {v}" for k, v in counts.items())
        lines.append(f"- {label}: {cells}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def draw_chart(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(report["confusion"])
    outcomes = sorted({k for counts in report["confusion"].values() for k in counts})
    fig, ax = plt.subplots(figsize=(10, 0.6 * len(labels) + 2))
    left = [0.0] * len(labels)
    for outcome in outcomes:
        shares = []
        for label in labels:
            counts = report["confusion"][label]
            total = sum(counts.values()) or 1
            shares.append(counts.get(outcome, 0) / total)
        ax.barh(labels, shares, left=left, label=outcome)
        left = [a + b for a, b in zip(left, shares, strict=True)]
    ax.set_xlabel("share of photos")
    ax.set_title("faceval eval pipeline: how each label was decided")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_docs(docs: Path, text: str, command: str) -> None:
    """Replace the marked section of a docs page with this report."""
    page = docs.read_text()
    block = f"{DOCS_BEGIN}\nRegenerate with `{command}`.\n\n{text}\n{DOCS_END}"
    if DOCS_BEGIN in page and DOCS_END in page:
        page = re.sub(re.escape(DOCS_BEGIN) + r".*?" + re.escape(DOCS_END), lambda _: block,
                      page, flags=re.S)  # fmt: skip
    else:
        page = page.rstrip() + "\n\n## Decisions on real photos (`faceval eval pipeline`)\n\n"
        page += block + "\n"
    docs.write_text(page)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="faceval eval pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", nargs="+", help="labelled folders (sub-folder names)")
    parser.add_argument("--labels", help="CSV path,label[,far] instead of folder names")
    parser.add_argument(
        "--default-label",
        choices=LABELS,
        help="label of photos under no labelled folder (e.g. genuine for a folder per person)",
    )
    parser.add_argument("--limit", type=int, help="at most this many photos per label")
    parser.add_argument("--seed", type=int, default=0, help="for --limit's choice")
    parser.add_argument("--jobs", type=int, default=1, help="processes (each loads the models)")
    parser.add_argument("--json", help="write the report as JSON here")
    parser.add_argument("--chart", help="write a PNG chart here")
    parser.add_argument("--outcomes", help="write every photo's outcome (JSON lines) here")
    parser.add_argument("--docs", help="replace the marked section of this Markdown page")


def run(args: argparse.Namespace) -> int:
    samples: list[Sample] = []
    for directory in args.directory:
        root = Path(directory)
        if not root.exists():
            print(f"faceval eval pipeline: {root} does not exist", file=sys.stderr)
            return 2
        labels = Path(args.labels) if args.labels else None
        samples += load_samples(root, labels, args.default_label)
    samples = limited(samples, args.limit, args.seed)
    if not samples:
        print("faceval eval pipeline: no labelled photos found (folders named "
              f"{', '.join(LABELS)} or {', '.join(ALIASES)})", file=sys.stderr)  # fmt: skip
        return 1
    print(f"{len(samples)} photos: " + ", ".join(
        f"{k} {v}" for k, v in sorted(Counter(s.label for s in samples).items())),
        file=sys.stderr)  # fmt: skip
    outcomes = []
    for index, outcome in enumerate(evaluate(samples, args.jobs), 1):
        outcomes.append(outcome)
        if index % 100 == 0:
            print(f"  {index}/{len(samples)}", file=sys.stderr)
    report = summarise(outcomes)
    source = " + ".join(args.directory)
    text = render(report, source)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.outcomes:
        with Path(args.outcomes).open("w") as handle:
            for outcome in outcomes:
                handle.write(json.dumps(asdict(outcome)) + "\n")
    if args.chart:
        draw_chart(report, Path(args.chart))
    if args.docs:
        command = "faceval eval pipeline " + " ".join(args.directory)
        if args.default_label:
            command += f" --default-label {args.default_label}"
        if args.limit:
            command += f" --limit {args.limit} --seed {args.seed}"
        write_docs(Path(args.docs), text, command + f" --docs {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
