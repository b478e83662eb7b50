"""The `faceval` command: the stack, clients, submissions, workers, models and evaluation."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import threading
import uuid
from importlib.metadata import version
from pathlib import Path
from typing import Any

import httpx

from cli.commands.models import add_commands as register_model_commands
from cli.commands.subjects import add_commands as register_subject_commands
from etl.cli import register as register_etl
from shared.pipeline import STAGES, Policy
from shared.settings import Settings, get_settings
from shared.storage import DuplicateKeyError, Store
from tools.stack import (
    StackError,
    create_client,
    free_port,
    port_open,
    revoke_client,
    rotate_client,
    start_stack,
)


def cmd_client(args: argparse.Namespace) -> int:
    settings = get_settings()
    if args.action == "list":
        return _list_clients(settings)
    if args.name is None:
        print(f"faceval client {args.action}: a client NAME is needed", file=sys.stderr)
        return 2
    if args.action == "policy":
        return _set_policy(settings, args)
    if args.action == "create":
        try:
            client_id, key = asyncio.run(create_client(settings, args.name, args.rate_limit))
        except DuplicateKeyError:
            print(f"a client named {args.name!r} exists; use `faceval client rotate`",
                  file=sys.stderr)  # fmt: skip
            return 1
        print(f"client {args.name} created (id {client_id}); its API key, shown only once:")
        print(key)
        return 0
    if args.action == "rotate":
        new_key = asyncio.run(rotate_client(settings, args.name))
        if new_key is None:
            print(f"no client named {args.name!r}", file=sys.stderr)
            return 1
        print(f"new API key for {args.name} (the old one no longer works):")
        print(new_key)
        return 0
    if not asyncio.run(revoke_client(settings, args.name)):
        print(f"no active client named {args.name!r}", file=sys.stderr)
        return 1
    print(f"client {args.name} revoked")
    return 0


def _list_clients(settings: Settings) -> int:
    async def fetch() -> list[dict[str, Any]]:
        store = Store(settings.mongo_url, settings.mongo_db)
        try:
            return await store.list_clients()
        finally:
            store.close()

    rows = asyncio.run(fetch())
    if not rows:
        print("no clients yet: `faceval client create NAME`")
    for row in rows:
        state = "revoked" if row.get("revoked_at") else "active"
        limit = row.get("rate_limit_per_minute") or f"{settings.rate_limit_per_minute} (default)"
        policy = json.dumps(row["policy"]) if row.get("policy") else "default"
        print(f"{row['name']:<24} {row['_id']}  {state:<8} rate/min {limit}  policy {policy}")
    return 0


def _set_policy(settings: Settings, args: argparse.Namespace) -> int:
    policy: dict[str, Any] | None = None
    if not args.clear:
        policy = {}
        if args.report_only is not None:
            policy["report_only"] = _names(args.report_only)
        if args.reject is not None:
            policy["reject"] = _names(args.reject)
        if args.identity_threshold is not None:
            policy["thresholds"] = {"identity": args.identity_threshold}

    async def save() -> bool:
        store = Store(settings.mongo_url, settings.mongo_db)
        try:
            return await store.set_client_policy(args.name, policy)
        finally:
            store.close()

    if not asyncio.run(save()):
        print(f"no client named {args.name!r}", file=sys.stderr)
        return 1
    effective = Policy.build(settings, None, policy)
    print(f"{args.name}: policy {json.dumps(policy) if policy else 'default'}; effective: "
          f"report only {sorted(effective.report_only) or 'nothing'}, "
          f"identity threshold {effective.thresholds['identity']}")  # fmt: skip
    return 0


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()]


# --- running the stack ---------------------------------------------------------------------


def _quiet_logging() -> None:
    """Libraries at WARNING (no pika/celery chatter on a clean start), FaceVal at INFO."""
    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("cli", "tools", "shared", "gateway"):
        logging.getLogger(name).setLevel("INFO")
    # pika logs a queue that does not exist yet (a probe before the workers declared it)
    # as a WARNING; that is expected while the stack starts.
    logging.getLogger("pika").setLevel("ERROR")


def cmd_up(args: argparse.Namespace) -> int:
    _quiet_logging()
    try:
        stack = start_stack(args.port)
    except StackError as exc:
        print(f"faceval up: {exc}", file=sys.stderr)
        return 1
    print(f"FaceVal is up: gateway {stack.url} (API docs {stack.url}/docs), "
          f"logs in {stack.log_dir}. Ctrl-C stops it.", flush=True)  # fmt: skip
    ports = ", ".join(f"{stage} :{port}" for stage, port in stack.metrics_ports.items())
    print(f"Prometheus metrics: gateway {stack.url}/metrics; workers {ports}", flush=True)
    print(_demo_page_hint(stack.url, args.demo_key), flush=True)
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        while not stopping.wait(1.0):
            for name, proc in list(stack.processes.items()):
                if proc.poll() is not None:
                    print(f"{name} exited ({proc.returncode}); restarting", file=sys.stderr)
                    if name in STAGES:
                        stack.start_worker(STAGES[STAGES.index(name)])
                    else:
                        raise StackError(f"{name} exited; see {stack.log_dir}/{name}.log")
    except StackError as exc:
        print(f"faceval up: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()
    return 0


def _stage_line(result: dict[str, Any]) -> str:
    parts = []
    for stage in STAGES:
        data = result.get("stages", {}).get(stage)
        if not data:
            parts.append(f"{stage}: -")
            continue
        cells = [f"{side} {data[side]['time_ms']:.1f}/{data[side]['queue_time_ms']:.1f}"
                 for side in ("near", "far") if data.get(side)]  # fmt: skip
        parts.append(f"{stage}: " + ", ".join(cells))
    return " | ".join(parts)


def _demo_page_hint(url: str, with_key: bool) -> str:
    page = f"{url}/demo/"
    if not with_key:
        return (f"Try it in a browser: {page} (a key: `faceval client create NAME`, "
                "or start with `faceval up --demo-key`)")  # fmt: skip
    _, key = asyncio.run(create_client(get_settings(), f"demo-{uuid.uuid4().hex[:8]}"))
    # In the fragment: the browser never sends it, so it stays out of server logs.
    return f"Try it in a browser (the link holds a new demo API key): {page}#key={key}"


def cmd_demo(args: argparse.Namespace) -> int:
    from client.client import FaceValClient
    from tools.samples import write_samples

    _quiet_logging()
    logging.getLogger("tools").setLevel("WARNING")
    settings = get_settings()
    port = settings.port if not port_open("127.0.0.1", settings.port) else free_port()
    print(f"Starting FaceVal (gateway on 127.0.0.1:{port}, logs in {settings.state_dir}/logs)...",
          flush=True)  # fmt: skip
    try:
        stack = start_stack(port)
    except StackError as exc:
        print(f"faceval demo: {exc}", file=sys.stderr)
        return 1
    failures = 0
    try:
        _, key = asyncio.run(create_client(settings, f"demo-{uuid.uuid4().hex[:8]}"))
        samples = write_samples(settings.state_dir.resolve() / "samples")
        print(f"Submitting {len(samples)} sample pairs (times in ms: execution/queue)\n")
        with FaceValClient(stack.url, key) as api:
            for sample, near, far in samples:
                result = api.submit(near, far, user_id=f"demo-{sample.name}", wait=30)
                if result["status"] == "pending":
                    result = api.get(result["transaction_id"], wait=30)
                got = (result.get("summary_reason"), result.get("decided_by"))
                ok = got == (sample.expected_reason, sample.expected_stage)
                failures += not ok
                print(f"{'ok  ' if ok else 'FAIL'} {sample.name:<13} -> {got[0]} "
                      f"(decided by {got[1] or 'all stages'}; expected {sample.expected_reason}) "
                      f"code {result.get('summary_code')} total "
                      f"{result.get('total_time_ms') or 0:.1f} ms")  # fmt: skip
                print(f"     {_stage_line(result)}")
                if args.json:
                    print(json.dumps(result, indent=2))
    except Exception as exc:
        print(f"faceval demo: {type(exc).__name__}: {exc}", file=sys.stderr)
        failures += 1
    finally:
        stack.stop()
    print(f"\n{'All samples behaved as expected.' if not failures else f'{failures} failed.'}")
    print("Your own photos, in a browser: `faceval up --demo-key` prints the demo page's link.")
    return 1 if failures else 0


def cmd_submit(args: argparse.Namespace) -> int:
    from client.client import ApiError, FaceValClient

    settings = get_settings()
    key = args.key or os.environ.get("FACEVAL_API_KEY")
    if not key:
        print("an API key is needed: --key or FACEVAL_API_KEY", file=sys.stderr)
        return 2
    url = args.url or f"http://{settings.host}:{settings.port}"
    if args.batch or args.near is None or args.far is None:
        return _submit_batch(args, url, key)
    for path in (args.near, args.far):
        if not Path(path).is_file():
            print(f"faceval submit: no such file: {path}", file=sys.stderr)
            return 2
    try:
        with FaceValClient(url, key) as api:
            result = api.submit(Path(args.near), Path(args.far), user_id=args.user_id,
                                process_guid=args.process_guid, wait=args.wait)  # fmt: skip
    except ApiError as exc:
        print(json.dumps(exc.body, indent=2) if args.json else f"error: {_error_line(exc)}",
              file=sys.stderr)  # fmt: skip
        return 1
    except httpx.TransportError as exc:
        print(f"faceval submit: could not reach the gateway at {url} ({type(exc).__name__}). "
              "Is it running (`faceval up`)? Point elsewhere with --url.",
              file=sys.stderr)  # fmt: skip
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
    elif result.get("status") == "pending":
        print(f"{result['transaction_id']}: still pending; read it later with "
              f"GET {result.get('status_url')}")  # fmt: skip
    else:
        print(summary_line(result))
        print(f"     {_stage_line(result)}")
    return 0


def summary_line(result: dict[str, Any]) -> str:
    """One line per result, as `faceval demo` and `faceval submit` print it."""
    return (f"{result['transaction_id']}: {result.get('summary_reason')} (decided by "
            f"{result.get('decided_by') or 'all stages'}) code {result.get('summary_code')} "
            f"total {result.get('total_time_ms') or 0:.1f} ms")  # fmt: skip


def _error_line(exc: Exception) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        return f"{body.get('code')}: {body.get('message')}"
    return str(exc)


def _submit_batch(args: argparse.Namespace, url: str, key: str) -> int:
    from client import batch

    if not args.batch or args.near or args.far or not args.out:
        print("usage: faceval submit NEAR FAR, or faceval submit --batch FOLDER|CSV --out FILE",
              file=sys.stderr)  # fmt: skip
        return 2
    options = batch.Options(user_id=args.user_id, process_guid=args.process_guid,
                            concurrency=args.concurrency, timeout=args.timeout)  # fmt: skip
    return batch.run(Path(args.batch), Path(args.out), url=url, api_key=key, fmt=args.format,
                     options=options)  # fmt: skip


def cmd_worker(args: argparse.Namespace) -> int:
    import importlib

    from shared.worker import run_worker

    module = importlib.import_module(f"services.{args.stage}.stage")
    run_worker(module.STAGE)
    return 0


def cmd_gateway(args: argparse.Namespace) -> int:
    from gateway.__main__ import main as gateway_main

    if args.port:
        os.environ["FACEVAL_PORT"] = str(args.port)
        get_settings.cache_clear()
    gateway_main()
    return 0


def cmd_samples(args: argparse.Namespace) -> int:
    from tools.samples import write_samples

    for sample, near, far in write_samples(Path(args.directory)):
        print(f"{sample.name}: {near} {far} (expected {sample.expected_reason})")
    return 0


def cmd_deadletters(args: argparse.Namespace) -> int:
    from shared.deadletters import list_dead_letters, requeue_dead_letters

    settings = get_settings()
    if args.action == "list":
        letters = list_dead_letters(settings)
        for letter in letters:
            print(letter.describe())
        print(f"{len(letters)} dead letter(s)")
        return 0
    chosen = set(args.transaction_ids) if args.transaction_ids else None
    if chosen is None and not args.all:
        print("name transaction ids to requeue, or --all", file=sys.stderr)
        return 2
    results = requeue_dead_letters(settings, chosen)
    for letter, problem in results:
        print(f"{'kept     ' if problem else 'requeued '} {letter.describe()}"
              + (f" ({problem})" if problem else ""))  # fmt: skip
    return 1 if any(problem for _, problem in results) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="faceval", description=__doc__)
    parser.add_argument("--version", action="version", version=f"faceval {version('faceval')}")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the whole stack and keep serving")
    up.add_argument("--port", type=int, default=get_settings().port,
                    help="the gateway's port (default: FACEVAL_PORT or 8000)")  # fmt: skip
    up.add_argument(
        "--demo-key", action="store_true", help="create a demo client; print a link with its key"
    )
    up.set_defaults(func=cmd_up)

    demo = sub.add_parser("demo", help="start the stack, validate the sample pairs, stop")
    demo.add_argument("--json", action="store_true", help="print each full result")
    demo.set_defaults(func=cmd_demo)

    client = sub.add_parser("client", help="manage API clients (keys, limits, policy)")
    client.add_argument("action", choices=["create", "rotate", "revoke", "list", "policy"],
                        help="create prints a new key once; rotate replaces it; revoke disables "
                        "it; list shows every client; policy sets its decision policy")  # fmt: skip
    client.add_argument("name", nargs="?", help="the client's name (not for list)")
    client.add_argument(
        "--rate-limit", type=int, help="validations a minute for this client (create only)"
    )
    client.add_argument("--report-only", metavar="CODES",
                        help="policy: comma-separated findings reported without rejecting "
                        "(replaces the default, e.g. glasses)")  # fmt: skip
    client.add_argument("--reject", metavar="CODES",
                        help="policy: findings that reject even if reported by default "
                        "(e.g. glasses)")  # fmt: skip
    client.add_argument("--identity-threshold", type=float,
                        help="policy: this client's same-person similarity threshold")  # fmt: skip
    client.add_argument("--clear", action="store_true", help="policy: back to the defaults")
    client.set_defaults(func=cmd_client)

    submit = sub.add_parser("submit", help="submit a near/far pair to a running gateway")
    submit.add_argument("near", nargs="?", help="near image (not with --batch)")
    submit.add_argument("far", nargs="?", help="far image (not with --batch)")
    submit.add_argument("--batch", metavar="FOLDER|CSV",
                        help="many pairs: <name>_near.*/<name>_far.* files, or a CSV with "
                        "columns near,far[,user_id,process_guid,name]")  # fmt: skip
    submit.add_argument("--out", help="--batch results file; a rerun skips pairs it has")
    submit.add_argument("--format", choices=["jsonl", "csv"],
                        help="--batch output format (default: from --out's suffix)")  # fmt: skip
    submit.add_argument("--concurrency", type=int, default=4, help="--batch pairs in flight")
    submit.add_argument("--timeout", type=float, default=120.0,
                        help="--batch seconds to wait for each pair's result")  # fmt: skip
    submit.add_argument("--user-id", default="cli-user",
                        help="the end user's identifier (document number)")  # fmt: skip
    submit.add_argument("--process-guid", help="the client's agreement process GUID")
    submit.add_argument("--key", help="API key (default: $FACEVAL_API_KEY)")
    submit.add_argument("--url", help="gateway URL (default: from settings)")
    submit.add_argument("--wait", type=float, default=30.0,
                        help="seconds to wait for the result (default 30)")  # fmt: skip
    submit.add_argument("--json", action="store_true",
                        help="print the whole result (default: a one-line summary)")  # fmt: skip
    submit.set_defaults(func=cmd_submit)

    worker = sub.add_parser("worker", help="run one stage's worker")
    worker.add_argument("stage", choices=STAGES, help="the stage whose queue it consumes")
    worker.set_defaults(func=cmd_worker)

    gateway = sub.add_parser("gateway", help="run the gateway")
    gateway.add_argument("--port", type=int, help="port (default: FACEVAL_PORT or 8000)")
    gateway.set_defaults(func=cmd_gateway)

    dead = sub.add_parser("deadletters", help="list or requeue jobs that failed every attempt")
    dead.add_argument("action", choices=["list", "requeue"])
    dead.add_argument("transaction_ids", nargs="*", help="requeue only these transactions")
    dead.add_argument("--all", action="store_true", help="requeue every dead letter")
    dead.set_defaults(func=cmd_deadletters)

    samples = sub.add_parser("samples", help="write the bundled sample pairs as JPEG files")
    samples.add_argument("directory", help="where to write <name>_near.jpg/<name>_far.jpg")
    samples.set_defaults(func=cmd_samples)

    register_etl(sub)
    register_model_commands(sub)  # models, eval, calibrate
    register_subject_commands(sub)  # subjects, verify, search
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))
