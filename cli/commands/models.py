"""The `faceval models`, `faceval eval` and `faceval calibrate` commands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from shared.models_registry import (
    ModelEntry,
    ModelNotReady,
    Registry,
    materialise,
    scorer_threshold,
    source_dir_of,
    status_of,
)
from shared.settings import get_settings


def models_rows(registry: Registry) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for entry in registry.manifest:
        state = status_of(entry, registry.model_dir)
        rows.append(
            (
                entry.name,
                entry.stage,
                entry.task,
                entry.version,
                state,
                entry.source.kind,
                entry.file or "-",
                entry.licence,
            )
        )
    return rows


def _registry() -> Registry:
    """The registry, or a clear exit when its manifest cannot be read."""
    try:
        return Registry.from_settings(get_settings())
    except (OSError, ValueError) as exc:
        raise SystemExit(
            f"faceval models: cannot read the model manifest ({exc}); set "
            "FACEVAL_MODEL_MANIFEST to a manifest.toml, or FACEVAL_MODEL_DIR to a folder "
            "holding one (the bundled models/manifest.toml is used by default)"
        ) from exc


def cmd_models_list(args: argparse.Namespace) -> int:
    registry = _registry()
    print(f"manifest {registry.manifest.path}; model directory {registry.model_dir.resolve()}")
    header = ("model", "stage", "task", "version", "status", "source", "file")
    rows = [row[:7] for row in models_rows(registry)]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())
    if args.licences:
        print()
        for row in models_rows(registry):
            print(f"{row[0]}: {row[7]}")
    return 0


def local_origin(entry: ModelEntry) -> bool:
    """Whether a converted model's upstream file is in the model source directory."""
    origin = entry.source.origin
    folder = source_dir_of(get_settings())
    return bool(origin) and any(
        (folder / name).is_file() for name in (str(origin), Path(str(origin)).name)
    )


def pull(registry: Registry, names: list[str], download: bool) -> list[tuple[str, str]]:
    """Materialise and verify; returns (model, outcome) where outcome starts with ok/skip/fail."""
    outcomes = []
    for entry in registry.manifest:
        if entry.file is None or (names and entry.name not in names):
            continue
        state = status_of(entry, registry.model_dir)
        if state == "verified":
            outcomes.append((entry.name, "ok (already verified)"))
            continue
        if entry.source.kind == "operator" and state == "missing":
            outcomes.append(
                (
                    entry.name,
                    f"skip (operator-supplied: copy {entry.file} into the "
                    "model directory and pin its sha256)",
                )
            )
            continue
        if entry.source.kind == "url" and not download:
            outcomes.append((entry.name, "skip (downloads only with --download)"))
            continue
        if entry.source.kind == "convert" and not download and not local_origin(entry):
            outcomes.append(
                (
                    entry.name,
                    "skip (its upstream file is not in the model source "
                    "directory; --download fetches it; until then it is not run)",
                )
            )
            continue
        try:
            if state != "unpinned":
                materialise(entry, registry.model_dir, download=download)
            registry.require(entry.name)
            outcomes.append((entry.name, "ok (verified)"))
        except (ModelNotReady, OSError) as exc:
            outcomes.append((entry.name, f"fail: {exc}"))
    return outcomes


def cmd_models_pull(args: argparse.Namespace) -> int:
    registry = _registry()
    outcomes = pull(registry, args.names, args.download)
    for name, outcome in outcomes:
        print(f"{name}: {outcome}")
    return 1 if any(o.startswith("fail") for _, o in outcomes) else 0


def cmd_eval_pad(args: argparse.Namespace) -> int:
    from tools.eval import pad
    from tools.eval.datasets import load_pad_dataset

    settings = get_settings()
    dataset = load_pad_dataset(Path(args.dataset), split=args.split, limit=args.limit)
    if not dataset.samples:
        print(f"no images found in {args.dataset}", file=sys.stderr)
        return 1
    threshold = args.threshold
    if threshold is None:
        thresholds = {
            "as_heuristics": settings.pad_heuristics_threshold,
            "minifasnet": settings.model_threshold("minifasnet", settings.pad_minifasnet_threshold),
        }
        threshold = thresholds.get(args.model)
        if threshold is None:
            # A scorer model: its threshold as the pad stage judges it.
            entry = _registry().manifest.entries.get(args.model)
            threshold = scorer_threshold(entry, settings) if entry and entry.scorer else None
        if threshold is None:
            threshold = settings.pad_model_threshold
    scored = pad.score_dataset(dataset, pad.build_scorer(settings, args.model))
    try:
        metrics = pad.metrics_of(scored, threshold)
    except ValueError as exc:
        print(f"faceval eval pad: {exc}", file=sys.stderr)
        return 1
    print(pad.render(metrics, dataset, args.model))
    if args.out:
        for path in pad.write_outputs(Path(args.out), scored, metrics, dataset, args.model):
            print(f"wrote {path}")
    return 0


def cmd_eval_detector(args: argparse.Namespace) -> int:
    from tools.eval.datasets import load_boxes
    from tools.eval.detector import build_detect, evaluate_detector

    name, detect = build_detect(get_settings(), args.max_side)
    metrics = evaluate_detector(Path(args.images), load_boxes(Path(args.labels)), detect, args.iou)
    print(f"{name} on {metrics.images} images ({metrics.missing_images} labelled images missing)")
    print(
        f"labelled faces {metrics.labelled}, detections {metrics.detected}, "
        f"matched (IoU >= {args.iou}) {metrics.matched}"
    )
    print(f"precision {metrics.precision:.4f}  recall {metrics.recall:.4f}")
    return 0


def cmd_eval_simulate(args: argparse.Namespace) -> int:
    from shared.imaging import decode_rgb
    from tools.eval import simulate
    from tools.eval.datasets import IMAGE_SUFFIXES

    if args.source:
        paths = sorted(
            p for p in Path(args.source).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
        )
        sources: Any = ((p.stem, decode_rgb(p.read_bytes())) for p in paths)
    else:
        sources = simulate.bundled_bona_fide()
    count = simulate.generate(Path(args.out), sources, seed=args.seed)
    print(simulate.NOTICE.rstrip())
    print(f"{count} bona fide images and {2 * count} SIMULATED attacks written to {args.out}")
    return 0


def cmd_eval_verify(args: argparse.Namespace) -> int:
    from tools.eval import verify

    return verify.run(args)


def cmd_eval_pipeline(args: argparse.Namespace) -> int:
    from tools.eval import pipeline

    return pipeline.run(args)


def cmd_calibrate_quality(args: argparse.Namespace) -> int:
    from tools.eval import calibrate

    folders = [Path(d) for d in args.directory]
    try:
        print(calibrate.calibrate_quality(folders, get_settings(), args.percentile))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


def add_commands(sub: Any) -> None:
    """Register `models`, `eval` and `calibrate` on the `faceval` parser."""
    models = sub.add_parser("models", help="list or materialise the registry's model files")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="each model: present, verified or missing")
    listing.add_argument("--licences", action="store_true", help="also print each licence")
    listing.set_defaults(func=cmd_models_list)
    pulling = models_sub.add_parser("pull", help="materialise and verify the model files")
    pulling.add_argument("names", nargs="*", help="only these models (default: all)")
    pulling.add_argument(
        "--download",
        action="store_true",
        help="also fetch URL sources (image builds; never at run time)",
    )
    pulling.set_defaults(func=cmd_models_pull)

    evaluation = sub.add_parser("eval", help="evaluate the PAD models or the face detector")
    eval_sub = evaluation.add_subparsers(dest="eval_command", required=True)
    pad = eval_sub.add_parser("pad", help="ISO/IEC 30107-3 figures on a labelled folder")
    pad.add_argument("dataset", help="bona_fide/ + attack/<type>/, or the CelebA-Spoof layout")
    pad.add_argument("--model", default="as_heuristics", help="PAD model whose prob is scored")
    pad.add_argument("--threshold", type=float, help="operating threshold (default: settings)")
    pad.add_argument("--out", help="folder for pad_report.json, pad_scores.csv, pad_det.png")
    pad.add_argument("--split", default="test", help="CelebA-Spoof split (default test)")
    pad.add_argument("--limit", type=int, help="at most this many images per class and type")
    pad.set_defaults(func=cmd_eval_pad)
    detector = eval_sub.add_parser("detector", help="precision/recall against labelled boxes")
    detector.add_argument("images", help="folder of images")
    detector.add_argument("labels", help="boxes: JSON {name: [[x, y, w, h], ...]} or WIDER txt")
    detector.add_argument("--iou", type=float, default=0.5)
    detector.add_argument("--max-side", type=int, help="detector input bound (default: settings)")
    detector.set_defaults(func=cmd_eval_detector)
    from tools.eval.pipeline import add_arguments as pipeline_arguments
    from tools.eval.verify import add_arguments as verify_arguments

    verify = eval_sub.add_parser(
        "verify", help="identity: genuine/impostor scores, EER, TAR at FAR, DET chart, threshold"
    )
    verify_arguments(verify)
    verify.set_defaults(func=cmd_eval_verify)

    decisions = eval_sub.add_parser(
        "pipeline", help="the production decisions on labelled photos: FRR, recall, confusion"
    )
    pipeline_arguments(decisions)
    decisions.set_defaults(func=cmd_eval_pipeline)
    simulate = eval_sub.add_parser(
        "simulate",
        help="write SIMULATED print/replay attacks (smoke checks only; not a valid PAD evaluation)",
    )
    simulate.add_argument("out", help="output folder (bona_fide/, attack/*_sim/)")
    simulate.add_argument("--from", dest="source", help="bona fide images (default: bundled)")
    simulate.add_argument("--seed", type=int, default=0)
    simulate.set_defaults(func=cmd_eval_simulate)

    calibrate = sub.add_parser("calibrate", help="propose thresholds from known-good captures")
    calibrate_sub = calibrate.add_subparsers(dest="calibrate_command", required=True)
    quality = calibrate_sub.add_parser("quality", help="quality thresholds from a folder")
    quality.add_argument("directory", nargs="+", help="folders of genuine photos")
    quality.add_argument(
        "--percentile",
        type=float,
        default=0.5,
        help="share of good captures each bound may reject, in %% (default 0.5)",
    )
    quality.set_defaults(func=cmd_calibrate_quality)
