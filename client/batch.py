"""`faceval submit --batch`: many near/far pairs, bounded concurrency, progress, resumable.

Pairs come from a folder (`<name>_near.<ext>` beside `<name>_far.<ext>`, as `faceval
samples DIR` writes them) or from a CSV with the columns `near,far[,user_id,process_guid,
name]`. Each finished pair is appended to the output (JSON lines or CSV) at once, so an
interrupted run loses only the pairs in flight; run the same command again and the pairs
the output already has a final answer for are skipped.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TextIO

import httpx

from client.client import ApiError, AsyncFaceValClient, is_final
from shared.pipeline import STAGES

Format = Literal["jsonl", "csv"]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SIDES = ("near", "far")
#: Outcomes that are a final answer for the pair: resuming does not submit it again.
#: `refused` is an upload the API turned down for good (not an image, too large...).
FINAL_OUTCOMES = frozenset({"completed", "refused"})
#: Answers worth retrying after the server's Retry-After: nothing is wrong with the pair.
RETRYABLE_STATUSES = frozenset({429, 502, 503, 504})
#: Refusals that say nothing about the pair (the key, the gateway): retried on resume.
TRANSIENT_STATUSES = RETRYABLE_STATUSES | {401, 500}
_PAIR_FILE = re.compile(r"^(?P<name>.+)_(?P<side>near|far)$", re.IGNORECASE)


class BatchError(Exception):
    """The batch cannot run as asked; the message says why, for a person."""


@dataclass(frozen=True)
class Pair:
    #: Identifies the pair in the output across runs: the folder name or the CSV row's.
    key: str
    near: Path
    far: Path
    user_id: str | None = None
    process_guid: str | None = None


@dataclass
class Discovery:
    pairs: list[Pair]
    #: Files that look like half a pair, or one side given twice: worth a warning.
    problems: list[str] = field(default_factory=list)


def discover_pairs(folder: Path) -> Discovery:
    """Pairs in a folder (not recursive), sorted by name."""
    sides: dict[str, dict[str, list[Path]]] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        match = _PAIR_FILE.match(path.stem)
        if match is None:
            continue
        side = match["side"].lower()
        sides.setdefault(match["name"], {}).setdefault(side, []).append(path)
    pairs: list[Pair] = []
    problems: list[str] = []
    for name, found in sorted(sides.items()):
        near, far = found.get("near", []), found.get("far", [])
        if len(near) == 1 and len(far) == 1:
            pairs.append(Pair(key=name, near=near[0], far=far[0]))
        elif not near or not far:
            have = (near or far)[0].name
            problems.append(f"{have}: no matching {'far' if near else 'near'} image")
        else:
            many = ", ".join(p.name for p in near + far)
            problems.append(f"{name}: more than one image for a side ({many})")
    return Discovery(pairs, problems)


def read_pairs_csv(path: Path) -> Discovery:
    """Pairs from a CSV; relative image paths are read from the CSV's own folder."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = {c.strip().lower() for c in reader.fieldnames or []}
        if not {"near", "far"} <= columns:
            raise BatchError(
                f"{path}: a header row with the columns near,far "
                "(and optionally user_id, process_guid, name) is needed"
            )
        pairs: list[Pair] = []
        seen: set[str] = set()
        for row in reader:
            cells = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
            if not any(cells.values()):
                continue
            line = reader.line_num
            if not cells.get("near") or not cells.get("far"):
                raise BatchError(f"{path}, line {line}: both near and far are needed")
            key = cells.get("name") or f"{cells['near']}|{cells['far']}"
            if key in seen:
                raise BatchError(f"{path}, line {line}: the pair {key!r} is listed twice")
            seen.add(key)
            pairs.append(
                Pair(
                    key=key,
                    near=path.parent / cells["near"],
                    far=path.parent / cells["far"],
                    user_id=cells.get("user_id") or None,
                    process_guid=cells.get("process_guid") or None,
                )
            )
    return Discovery(pairs)


def load_pairs(source: Path) -> Discovery:
    if source.is_dir():
        return discover_pairs(source)
    if source.is_file():
        return read_pairs_csv(source)
    raise BatchError(f"{source}: no such folder or CSV file")


# --- output --------------------------------------------------------------------------------


def output_columns() -> list[str]:
    timing = [
        f"{stage}_{side}_{what}"
        for stage in STAGES
        for side in SIDES
        for what in ("time_ms", "queue_time_ms")
    ]
    return [
        "pair", "near", "far", "outcome", "transaction_id", "summary_code", "summary_status",
        "summary_reason", "summary_desc", "decided_by", "reasons", "total_time_ms",
        "elapsed_ms", "error_code", "error_message", *timing,
    ]  # fmt: skip


def result_row(pair: Pair, result: dict[str, Any], elapsed_ms: float) -> dict[str, Any]:
    """A flat row for one answered pair: the decision and every stage's times per image."""
    row: dict[str, Any] = dict.fromkeys(output_columns())
    row.update(
        pair=pair.key,
        near=str(pair.near),
        far=str(pair.far),
        outcome="completed" if is_final(result) else "pending",
        elapsed_ms=round(elapsed_ms, 1),
    )
    for name in ("transaction_id", "summary_code", "summary_status", "summary_reason",
                 "summary_desc", "decided_by", "total_time_ms"):  # fmt: skip
        row[name] = result.get(name)
    row["reasons"] = ";".join(str(r.get("code")) for r in result.get("reasons") or [])
    for stage, data in (result.get("stages") or {}).items():
        for side in SIDES:
            image = (data or {}).get(side) or {}
            row[f"{stage}_{side}_time_ms"] = image.get("time_ms")
            row[f"{stage}_{side}_queue_time_ms"] = image.get("queue_time_ms")
    return row


def error_row(pair: Pair, error: Exception, elapsed_ms: float) -> dict[str, Any]:
    row: dict[str, Any] = dict.fromkeys(output_columns())
    row.update(
        pair=pair.key, near=str(pair.near), far=str(pair.far), elapsed_ms=round(elapsed_ms, 1)
    )
    if isinstance(error, ApiError):
        row.update(error_code=error.code, error_message=error.message)
        row["outcome"] = "failed" if error.status in TRANSIENT_STATUSES else "refused"
    elif isinstance(error, OSError):
        # Failed, not refused: a fixed path or a restored file is picked up by the next run.
        row.update(outcome="failed", error_code="unreadable_file", error_message=str(error))
    else:
        row.update(outcome="failed", error_code=type(error).__name__, error_message=str(error))
    return row


def finished_pairs(out: Path, fmt: Format) -> set[str]:
    """Keys of the pairs that already have a final answer in `out` (missing file: none).
    A line cut short by an interruption is ignored: that pair simply runs again."""
    if not out.exists():
        return set()
    done: set[str] = set()
    with out.open(newline="", encoding="utf-8") as handle:
        if fmt == "csv":
            rows: Iterable[dict[str, Any]] = csv.DictReader(handle)
        else:
            rows = _json_lines(handle)
        for row in rows:
            if row.get("outcome") in FINAL_OUTCOMES and row.get("pair"):
                done.add(str(row["pair"]))
    return done


def _json_lines(handle: TextIO) -> Iterable[dict[str, Any]]:
    for line in handle:
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            yield value


class Sink(Protocol):
    def write(self, row: dict[str, Any], full: dict[str, Any] | None) -> None: ...

    def close(self) -> None: ...


class JsonLinesSink:
    """One JSON object a line: the flat row plus the API's whole answer under `result`."""

    def __init__(self, path: Path) -> None:
        self._handle = _open_for_append(path)

    def write(self, row: dict[str, Any], full: dict[str, Any] | None) -> None:
        record = {k: v for k, v in row.items() if v is not None and not _is_timing(k)}
        if full is not None:
            record["result"] = full
        self._handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class CsvSink:
    def __init__(self, path: Path) -> None:
        columns = output_columns()
        fresh = not path.exists() or path.stat().st_size == 0
        if not fresh:
            with path.open(newline="", encoding="utf-8") as handle:
                header = next(csv.reader(handle), [])
            if header != columns:
                raise BatchError(
                    f"{path} has other columns than this version writes; choose another --out"
                )
        self._handle = _open_for_append(path)
        self._writer = csv.DictWriter(self._handle, fieldnames=columns)
        if fresh:
            self._writer.writeheader()

    def write(self, row: dict[str, Any], full: dict[str, Any] | None) -> None:
        self._writer.writerow(row)
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def _is_timing(column: str) -> bool:
    # The full result already holds the stage times; JSON lines need not repeat them.
    return column.endswith("_time_ms") and column != "total_time_ms"


def _open_for_append(path: Path) -> TextIO:
    path.parent.mkdir(parents=True, exist_ok=True)
    needs_newline = False
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as tail:
            tail.seek(-1, 2)
            needs_newline = tail.read(1) != b"\n"
    handle = path.open("a", newline="", encoding="utf-8")
    if needs_newline:
        # The last run was cut mid-line: end that line so the next record stands alone.
        handle.write("\n")
    return handle


def open_sink(path: Path, fmt: Format) -> Sink:
    return CsvSink(path) if fmt == "csv" else JsonLinesSink(path)


def format_for(path: Path, given: str | None) -> Format:
    if given in ("jsonl", "csv"):
        return given  # type: ignore[return-value]
    return "csv" if path.suffix.lower() == ".csv" else "jsonl"


# --- progress ------------------------------------------------------------------------------


class Progress:
    """A one-line progress bar on a terminal; on a pipe or file, a line every few seconds."""

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 28) -> None:
        self.total = total
        self.counts: dict[str, int] = {}
        self._stream = stream or sys.stderr
        self._tty = self._stream.isatty()
        self._width = width
        self._started = time.monotonic()
        self._last_line = 0.0

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def update(self, label: str) -> None:
        self.counts[label] = self.counts.get(label, 0) + 1
        now = time.monotonic()
        if self._tty:
            self._stream.write("\r" + self.line() + "\x1b[K")
            self._stream.flush()
        elif now - self._last_line >= 2.0 or self.done == self.total:
            self._last_line = now
            self._stream.write(self.line() + "\n")
            self._stream.flush()

    def line(self) -> str:
        done, total = self.done, max(self.total, 1)
        filled = round(self._width * done / total)
        elapsed = time.monotonic() - self._started
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = f"{(self.total - done) / rate:.0f}s" if rate > 0 and done < self.total else "-"
        tally = " ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        return (f"[{'#' * filled}{'.' * (self._width - filled)}] {done}/{self.total} "
                f"{100 * done / total:3.0f}% {rate:.1f}/s eta {eta} | {tally}")  # fmt: skip

    def finish(self) -> None:
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


def progress_label(row: dict[str, Any]) -> str:
    if row["outcome"] == "completed":
        return str(row.get("summary_status") or "completed")
    return str(row["outcome"])


# --- running -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    user_id: str = "batch-user"
    process_guid: str | None = None
    concurrency: int = 4
    #: Per pair: how long to wait for the final result after submitting.
    timeout: float = 120.0
    #: Tries for an answer the server says to retry (429, 503...), honouring Retry-After.
    attempts: int = 3


async def _validate(api: AsyncFaceValClient, pair: Pair, options: Options) -> dict[str, Any]:
    for attempt in range(1, options.attempts + 1):
        try:
            return await api.validate(
                pair.near, pair.far,
                user_id=pair.user_id or options.user_id,
                process_guid=pair.process_guid or options.process_guid,
                client_reference=pair.key[:128],
                timeout=options.timeout,
            )  # fmt: skip
        except ApiError as exc:
            if exc.status not in RETRYABLE_STATUSES or attempt == options.attempts:
                raise
            await asyncio.sleep(min(exc.retry_after or 2.0 * attempt, 30.0))
    raise AssertionError("unreachable")


async def run_batch(
    pairs: list[Pair], api: AsyncFaceValClient, sink: Sink, progress: Progress, options: Options
) -> dict[str, int]:
    """Validate `pairs`, at most `options.concurrency` at once, writing each as it ends.
    Returns the count of each outcome."""
    queue: asyncio.Queue[Pair] = asyncio.Queue()
    for pair in pairs:
        queue.put_nowait(pair)
    outcomes: dict[str, int] = {}

    async def worker() -> None:
        while True:
            try:
                pair = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            started = time.monotonic()
            full: dict[str, Any] | None = None
            try:
                full = await _validate(api, pair, options)
                row = result_row(pair, full, 1000 * (time.monotonic() - started))
            except (ApiError, httpx.HTTPError, OSError) as exc:
                row = error_row(pair, exc, 1000 * (time.monotonic() - started))
                full = exc.body if isinstance(exc, ApiError) else None
            sink.write(row, full)
            outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + 1
            progress.update(progress_label(row))

    await asyncio.gather(*(worker() for _ in range(max(1, options.concurrency))))
    progress.finish()
    return outcomes


def run(
    source: Path,
    out: Path,
    *,
    url: str,
    api_key: str,
    fmt: str | None = None,
    options: Options | None = None,
    stream: TextIO | None = None,
) -> int:
    """The CLI's batch command: returns the exit status (0 when every pair got an answer)."""
    options = options or Options()
    err = stream or sys.stderr
    try:
        discovery = load_pairs(source)
        out_format = format_for(out, fmt)
        done = finished_pairs(out, out_format)
    except (BatchError, OSError, csv.Error) as exc:
        print(f"faceval submit --batch: {exc}", file=err)
        return 2
    for problem in discovery.problems:
        print(f"skipped: {problem}", file=err)
    if not discovery.pairs:
        hint = "name them <name>_near.jpg and <name>_far.jpg, or list them in a CSV"
        print(f"no pairs found in {source}: {hint}", file=err)
        return 2
    todo = [p for p in discovery.pairs if p.key not in done]
    print(f"{len(discovery.pairs)} pairs in {source}: {len(discovery.pairs) - len(todo)} "
          f"already in {out}, {len(todo)} to submit ({options.concurrency} at a time)",
          file=err)  # fmt: skip
    try:
        sink = open_sink(out, out_format)
    except (BatchError, OSError) as exc:
        print(f"faceval submit --batch: {exc}", file=err)
        return 2

    async def go() -> dict[str, int]:
        limit = max(1, options.concurrency)
        async with AsyncFaceValClient(url, api_key, max_connections=limit) as api:
            return await run_batch(todo, api, sink, Progress(len(todo), err), options)

    try:
        outcomes = asyncio.run(go())
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished pairs are in {out}; the same command resumes", file=err)
        return 130
    finally:
        sink.close()
    summary = ", ".join(f"{v} {k}" for k, v in sorted(outcomes.items())) or "nothing new"
    print(f"done: {summary}; results in {out}", file=err)
    unfinished = outcomes.get("failed", 0) + outcomes.get("pending", 0)
    if unfinished:
        print(f"{unfinished} pair(s) had no final answer: run the same command again to retry"
              " them", file=err)  # fmt: skip
    return 1 if unfinished else 0
