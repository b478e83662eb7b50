"""`faceval etl ...` and `faceval simulate`, registered into the `faceval` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from etl.dates import parse_day
from etl.errors import EtlError
from shared.settings import get_settings

STEPS = ("extract", "stage", "transform", "load", "report", "run")


def _say(line: str) -> None:
    print(line, flush=True)


def _options(args: argparse.Namespace) -> Any:
    from etl.pipeline import Options

    settings = get_settings()
    return Options(
        out=Path(args.out) if args.out else settings.state_dir / "etl",
        backend=args.backend,
        since=args.since,
        until=args.until,
        include_synthetic=args.include_synthetic,
    )


def cmd_etl(args: argparse.Namespace) -> int:
    from etl import pipeline

    steps: dict[str, Callable[..., Any]] = {
        "extract": pipeline.extract,
        "stage": pipeline.stage,
        "transform": pipeline.transform_step,
        "load": pipeline.load,
        "report": pipeline.report,
        "run": pipeline.run,
    }
    try:
        steps[args.step](get_settings(), _options(args), _say)
    except (EtlError, ValueError) as exc:
        print(f"faceval etl {args.step}: {exc}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, EtlError) else 2
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from etl.simulate import main as simulate_main

    return simulate_main(args)


def _day(text: str) -> Any:
    try:
        return parse_day(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def register(sub: Any) -> None:
    """Add `etl` and `simulate` to the `faceval` subcommands."""
    etl = sub.add_parser("etl", help="analytics ETL: extract, stage, transform, load, report")
    steps = etl.add_subparsers(dest="step", required=True)
    helps = {
        "extract": "finished transactions -> anonymised extract.csv/.parquet + data dictionary",
        "stage": "the extract -> PostgreSQL staging (replaces its days)",
        "transform": "staging -> checked rows with derived columns (transformed.parquet)",
        "load": "transformed rows -> warehouse (replaces their days), advances the watermark",
        "report": "warehouse -> report.html, report.json and charts",
        "run": "all steps for everything new since the watermark (or --since/--until)",
    }
    for step in STEPS:
        p = steps.add_parser(step, help=helps[step])
        p.add_argument("--out", help="folder for the files (default: <state_dir>/etl)")
        p.add_argument(
            "--backend",
            choices=["duckdb", "postgres"],
            help="warehouse (default: FACEVAL_ETL_BACKEND, duckdb)",
        )
        p.add_argument("--since", type=_day, help="first UTC day, YYYY-MM-DD")
        p.add_argument("--until", type=_day, help="last UTC day, included (default: today)")
        p.add_argument(
            "--include-synthetic",
            action="store_true",
            help="also extract synthetic scale-test documents",
        )
        p.set_defaults(func=cmd_etl)

    sim = sub.add_parser("simulate", help="drive realistic traffic through the real pipeline")
    sim.add_argument("--transactions", type=int, default=60, help="how many to submit")
    sim.add_argument("--clients", type=int, default=3)
    sim.add_argument("--concurrency", type=int, default=2)
    sim.add_argument("--seed", type=int, default=1)
    sim.add_argument("--url", help="gateway URL (default: from settings; started if none)")
    sim.add_argument(
        "--synthetic",
        type=int,
        default=0,
        metavar="N",
        help="instead: write N synthetic documents (scale tests only)",
    )
    sim.set_defaults(func=cmd_simulate)
