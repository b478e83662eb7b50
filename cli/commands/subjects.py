"""`faceval subjects add|list|delete|reindex`, `faceval verify` and `faceval search`: the
subjects API from a terminal (through the typed client), and the index rebuild for
operators."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from shared.settings import get_settings


def _api(args: argparse.Namespace) -> Any:
    from client.client import FaceValClient

    key = args.key or os.environ.get("FACEVAL_API_KEY")
    if not key:
        raise SystemExit("an API key is needed: --key or FACEVAL_API_KEY")
    settings = get_settings()
    return FaceValClient(args.url or f"http://{settings.host}:{settings.port}", key)


def _run(args: argparse.Namespace, call: Any) -> int:
    from client.client import ApiError

    with _api(args) as api:
        try:
            result = call(api)
        except ApiError as exc:
            print(json.dumps(exc.body, indent=2), file=sys.stderr)
            return 1
    if result is not None:
        print(json.dumps(result, indent=2))
    return 0


def cmd_add(args: argparse.Namespace) -> int:
    images = [Path(p) for p in args.images]
    return _run(args, lambda api: api.enroll(args.external_id, images))


def cmd_list(args: argparse.Namespace) -> int:
    from client.client import ApiError

    with _api(args) as api:
        after: str | None = None
        try:
            while True:
                page = api.list_subjects(limit=args.limit, after=after)
                for s in page["items"]:
                    print(f"{s['subject_id']}  {s['external_id']:<24} images {s['images_used']}"
                          f"  {s['model']} {s['model_version']}  {s['updated_at']}")  # fmt: skip
                after = page["next_after"]
                if after is None or not args.all:
                    break
        except ApiError as exc:
            print(json.dumps(exc.body, indent=2), file=sys.stderr)
            return 1
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    code = _run(args, lambda api: api.delete_subject(args.subject_id))
    if code == 0:
        print(f"subject {args.subject_id} erased")
    return code


def cmd_verify(args: argparse.Namespace) -> int:
    return _run(args, lambda api: api.verify(args.subject_id, Path(args.image)))


def cmd_search(args: argparse.Namespace) -> int:
    return _run(args, lambda api: api.search(Path(args.image), k=args.k))


def cmd_reindex(args: argparse.Namespace) -> int:
    """Rebuild the configured engine's index from MongoDB (the source of truth)."""
    from shared.storage import Store
    from shared.vectors import make_index

    settings = get_settings()
    if settings.vector_engine == "embedded":
        print("the embedded index lives in each gateway process and is rebuilt from MongoDB "
              "when the gateway starts; nothing to do")  # fmt: skip
        return 0

    async def go() -> int:
        store = Store(settings.mongo_url, settings.mongo_db)
        index = make_index(settings)
        try:
            return await index.rebuild(store)
        finally:
            index.close()
            store.close()

    count = asyncio.run(go())
    print(f"{settings.vector_engine} index rebuilt from MongoDB: {count} subjects")
    return 0


def _connection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", help="API key (default: $FACEVAL_API_KEY)")
    parser.add_argument("--url", help="gateway URL (default: from settings)")


def add_commands(sub: Any) -> None:
    """Register `subjects`, `verify` and `search` on the `faceval` parser."""
    subjects = sub.add_parser("subjects", help="enrol, list and erase subjects (face templates)")
    actions = subjects.add_subparsers(dest="subjects_command", required=True)
    add = actions.add_parser("add", help="enrol (or replace) a subject from 1 to 3 images")
    add.add_argument("external_id", help="your id for the person (e.g. a document number)")
    add.add_argument("images", nargs="+", help="1 to 3 photos of the person")
    _connection(add)
    add.set_defaults(func=cmd_add)
    listing = actions.add_parser("list", help="list this client's subjects")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--all", action="store_true", help="every page, not just the first")
    _connection(listing)
    listing.set_defaults(func=cmd_list)
    delete = actions.add_parser("delete", help="erase a subject (MongoDB and the index)")
    delete.add_argument("subject_id")
    _connection(delete)
    delete.set_defaults(func=cmd_delete)
    reindex = actions.add_parser(
        "reindex", help="rebuild the vector index from MongoDB (operators; qdrant engine)"
    )
    reindex.set_defaults(func=cmd_reindex)

    verify = sub.add_parser("verify", help="1:1: is the face in IMAGE the subject?")
    verify.add_argument("subject_id")
    verify.add_argument("image")
    _connection(verify)
    verify.set_defaults(func=cmd_verify)

    search = sub.add_parser("search", help="1:N: this client's subjects most like IMAGE")
    search.add_argument("image")
    search.add_argument("--k", type=int, default=5, help="at most this many subjects")
    _connection(search)
    search.set_defaults(func=cmd_search)
