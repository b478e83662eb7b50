"""The batch runner's parts: finding pairs, reading CSVs, writing and resuming output."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from client import batch
from client.batch import BatchError, Options, Pair, Progress
from client.client import ApiError, AsyncFaceValClient


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"\xff\xd8 not really a jpeg")


def _result(transaction_id: str = "t1", reason: str = "accepted") -> dict[str, Any]:
    image = {"verdict": "pass", "time_ms": 12.5, "queue_time_ms": 3.25, "scores": {}}
    return {
        "transaction_id": transaction_id,
        "status": "completed",
        "summary_code": 0,
        "summary_status": "accepted",
        "summary_reason": reason,
        "decided_by": None,
        "total_time_ms": 80.0,
        "reasons": [],
        "stages": {
            "face_detector": {"near": image, "far": image},
            "accessory": {"near": image, "far": None},
            "quality": None,
            "pad": None,
        },
    }


# --- finding pairs -------------------------------------------------------------------------


def test_discovers_pairs_named_like_faceval_samples_writes_them(tmp_path: Path) -> None:
    _touch(tmp_path, "b_near.jpg", "b_far.JPG", "a_near.png", "a_far.webp", "notes.txt")
    found = batch.discover_pairs(tmp_path)
    assert [(p.key, p.near.name, p.far.name) for p in found.pairs] == [
        ("a", "a_near.png", "a_far.webp"),
        ("b", "b_near.jpg", "b_far.JPG"),
    ]
    assert found.problems == []


def test_reports_half_pairs_and_ambiguous_sides_instead_of_guessing(tmp_path: Path) -> None:
    _touch(tmp_path, "lonely_near.jpg", "twice_near.jpg", "twice_near.png", "twice_far.jpg")
    _touch(tmp_path, "ok_near.jpeg", "ok_far.jpeg", "holiday.jpg")
    found = batch.discover_pairs(tmp_path)
    assert [p.key for p in found.pairs] == ["ok"]
    assert found.problems == [
        "lonely_near.jpg: no matching far image",
        "twice: more than one image for a side (twice_near.jpg, twice_near.png, twice_far.jpg)",
    ]


def test_a_name_may_itself_contain_near_or_far(tmp_path: Path) -> None:
    _touch(tmp_path, "far_away_near.jpg", "far_away_far.jpg")
    assert [p.key for p in batch.discover_pairs(tmp_path).pairs] == ["far_away"]


# --- CSV input -----------------------------------------------------------------------------


def test_reads_a_csv_with_optional_columns_and_paths_relative_to_it(tmp_path: Path) -> None:
    source = tmp_path / "pairs.csv"
    source.write_text(
        "Near, Far ,user_id,process_guid,name\n"
        "img/1n.jpg,img/1f.jpg,12345,7d9f3c1e-8e8a-4c55-9d1c-1b2f3a4b5c6d,first\n"
        "\n"
        "/abs/2n.jpg,/abs/2f.jpg,,,\n"
    )
    pairs = batch.read_pairs_csv(source).pairs
    assert pairs == [
        Pair("first", tmp_path / "img/1n.jpg", tmp_path / "img/1f.jpg", "12345",
             "7d9f3c1e-8e8a-4c55-9d1c-1b2f3a4b5c6d"),
        Pair("/abs/2n.jpg|/abs/2f.jpg", Path("/abs/2n.jpg"), Path("/abs/2f.jpg")),
    ]  # fmt: skip


def test_refuses_a_csv_without_near_and_far_columns(tmp_path: Path) -> None:
    source = tmp_path / "pairs.csv"
    source.write_text("a.jpg,b.jpg\n")
    with pytest.raises(BatchError, match="columns near,far"):
        batch.read_pairs_csv(source)


def test_refuses_a_csv_row_missing_a_side_naming_its_line(tmp_path: Path) -> None:
    source = tmp_path / "pairs.csv"
    source.write_text("near,far\na.jpg,b.jpg\nc.jpg,\n")
    with pytest.raises(BatchError, match="line 3: both near and far"):
        batch.read_pairs_csv(source)


def test_refuses_a_csv_listing_the_same_pair_twice(tmp_path: Path) -> None:
    source = tmp_path / "pairs.csv"
    source.write_text("near,far\na.jpg,b.jpg\na.jpg,b.jpg\n")
    with pytest.raises(BatchError, match="listed twice"):
        batch.read_pairs_csv(source)


def test_load_pairs_says_when_the_source_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(BatchError, match="no such folder or CSV"):
        batch.load_pairs(tmp_path / "missing")


# --- rows and output -----------------------------------------------------------------------


def test_a_result_row_has_every_stage_time_per_image_and_blanks_for_stages_not_run() -> None:
    pair = Pair("a", Path("a_near.jpg"), Path("a_far.jpg"))
    row = batch.result_row(pair, _result(), elapsed_ms=99.94)
    assert list(row) == batch.output_columns()
    assert row["outcome"] == "completed"
    assert row["summary_reason"] == "accepted"
    assert row["elapsed_ms"] == 99.9
    assert row["face_detector_near_time_ms"] == 12.5
    assert row["face_detector_far_queue_time_ms"] == 3.25
    assert row["accessory_far_time_ms"] is None
    assert row["pad_near_time_ms"] is None


def test_a_pending_answer_is_not_counted_as_finished() -> None:
    pair = Pair("a", Path("n"), Path("f"))
    row = batch.result_row(pair, {"transaction_id": "t", "status": "pending"}, 1.0)
    assert row["outcome"] == "pending"
    assert row["outcome"] not in batch.FINAL_OUTCOMES


def _refusal(status: int, code: str) -> ApiError:
    return ApiError(status, {"code": code, "message": "..."})


@pytest.mark.parametrize(
    ("error", "outcome", "code"),
    [
        (_refusal(415, "unsupported_format"), "refused", "unsupported_format"),
        (_refusal(503, "service_unavailable"), "failed", "service_unavailable"),
        (_refusal(401, "unauthorized"), "failed", "unauthorized"),
        (_refusal(429, "rate_limited"), "failed", "rate_limited"),
        (httpx.ConnectError("refused"), "failed", "ConnectError"),
        (FileNotFoundError("a_near.jpg"), "failed", "unreadable_file"),
    ],
)
def test_an_error_row_says_whether_a_rerun_should_try_again(
    error: Exception, outcome: str, code: str
) -> None:
    row = batch.error_row(Pair("a", Path("n"), Path("f")), error, 5.0)
    assert (row["outcome"], row["error_code"]) == (outcome, code)


def test_resume_skips_pairs_with_a_final_answer_and_ignores_a_cut_off_line(
    tmp_path: Path,
) -> None:
    out = tmp_path / "results.jsonl"
    sink = batch.JsonLinesSink(out)
    sink.write(batch.result_row(Pair("done", Path("n"), Path("f")), _result(), 1.0), _result())
    refusal = ApiError(415, {"code": "unsupported_format", "message": "no"})
    sink.write(batch.error_row(Pair("bad", Path("n"), Path("f")), refusal, 1.0), None)
    failure = ApiError(503, {"code": "service_unavailable", "message": "later"})
    sink.write(batch.error_row(Pair("retry", Path("n"), Path("f")), failure, 1.0), None)
    sink.close()
    with out.open("a") as handle:
        handle.write('{"pair": "cut", "outcome": "compl')  # the run was killed mid-write
    assert batch.finished_pairs(out, "jsonl") == {"done", "bad"}

    # The next record starts on a line of its own, after the cut-off one.
    sink = batch.JsonLinesSink(out)
    sink.write(batch.result_row(Pair("cut", Path("n"), Path("f")), _result("t2"), 1.0), None)
    sink.close()
    assert batch.finished_pairs(out, "jsonl") == {"done", "bad", "cut"}


def test_json_lines_hold_the_summary_and_the_whole_api_answer(tmp_path: Path) -> None:
    out = tmp_path / "r.jsonl"
    sink = batch.JsonLinesSink(out)
    full = _result()
    sink.write(batch.result_row(Pair("a", Path("n"), Path("f")), full, 1.0), full)
    sink.close()
    record = json.loads(out.read_text())
    assert record["pair"] == "a"
    assert record["summary_reason"] == "accepted"
    assert record["result"] == full
    assert "face_detector_near_time_ms" not in record  # already in result.stages


def test_csv_output_has_a_header_once_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    for key in ("a", "b"):
        sink = batch.CsvSink(out)
        sink.write(batch.result_row(Pair(key, Path("n"), Path("f")), _result(), 1.0), None)
        sink.close()
    rows = list(csv.DictReader(out.open()))
    assert [r["pair"] for r in rows] == ["a", "b"]
    assert rows[0]["quality_far_queue_time_ms"] == ""
    assert rows[0]["face_detector_near_time_ms"] == "12.5"
    assert batch.finished_pairs(out, "csv") == {"a", "b"}


def test_csv_output_refuses_to_append_to_a_file_with_other_columns(tmp_path: Path) -> None:
    out = tmp_path / "r.csv"
    out.write_text("something,else\n1,2\n")
    with pytest.raises(BatchError, match="other columns"):
        batch.CsvSink(out)


def test_the_output_format_follows_the_suffix_unless_given(tmp_path: Path) -> None:
    assert batch.format_for(Path("r.csv"), None) == "csv"
    assert batch.format_for(Path("r.jsonl"), None) == "jsonl"
    assert batch.format_for(Path("r.txt"), None) == "jsonl"
    assert batch.format_for(Path("r.csv"), "jsonl") == "jsonl"


def test_no_output_file_means_nothing_is_finished(tmp_path: Path) -> None:
    assert batch.finished_pairs(tmp_path / "none.jsonl", "jsonl") == set()


# --- progress ------------------------------------------------------------------------------


def test_progress_on_a_pipe_prints_whole_lines_ending_with_the_total() -> None:
    stream = io.StringIO()
    progress = Progress(3, stream)
    for label in ("accepted", "rejected", "accepted"):
        progress.update(label)
    progress.finish()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("[" + "#" * 28 + "] 3/3 100%")
    assert lines[-1].endswith("| accepted 2 rejected 1")


# --- running, against a fake gateway -------------------------------------------------------


class FakeGateway:
    """Answers like the gateway: a final result for good pairs, 415 for `bad` files, and a
    429 with Retry-After for the first try of `busy` pairs."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.throttled: set[str] = set()

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        body = request.content.decode("latin-1")
        reference = body.split('name="client_reference"\r\n\r\n', 1)[1].split("\r\n", 1)[0]
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await asyncio.sleep(0.01)
        self.in_flight -= 1
        if reference.startswith("busy") and reference not in self.throttled:
            self.throttled.add(reference)
            return httpx.Response(
                429, json={"code": "rate_limited", "message": "slow"}, headers={"Retry-After": "0"}
            )
        self.submitted.append(reference)
        if reference.startswith("bad"):
            return httpx.Response(415, json={"code": "unsupported_format", "message": "no"})
        return httpx.Response(200, json=_result(f"t-{reference}"))


def _run(pairs: list[Pair], gateway: FakeGateway, out: Path, concurrency: int) -> dict[str, int]:
    async def go() -> dict[str, int]:
        transport = httpx.MockTransport(gateway)
        async with AsyncFaceValClient("http://gw", "key", transport=transport) as api:
            sink = batch.JsonLinesSink(out)
            try:
                options = Options(concurrency=concurrency)
                return await batch.run_batch(
                    pairs, api, sink, Progress(len(pairs), io.StringIO()), options
                )
            finally:
                sink.close()

    return asyncio.run(go())


def test_runs_pairs_with_bounded_concurrency_retrying_when_told_to(tmp_path: Path) -> None:
    _touch(tmp_path, "n.jpg", "f.jpg")
    names = [f"ok{i}" for i in range(8)] + ["bad1", "busy1"]
    pairs = [Pair(name, tmp_path / "n.jpg", tmp_path / "f.jpg") for name in names]
    gateway = FakeGateway()
    out = tmp_path / "out.jsonl"
    outcomes = _run(pairs, gateway, out, concurrency=3)
    assert outcomes == {"completed": 9, "refused": 1}
    assert sorted(gateway.submitted) == sorted(names)
    assert 1 < gateway.most_in_flight <= 3
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["pair"]: r["outcome"] for r in records}["busy1"] == "completed"
    assert batch.finished_pairs(out, "jsonl") == set(names)


def test_run_skips_finished_pairs_and_exits_zero(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _touch(tmp_path, "a_near.jpg", "a_far.jpg", "b_near.jpg", "b_far.jpg")
    out = tmp_path / "out.jsonl"
    out.write_text(json.dumps({"pair": "a", "outcome": "completed"}) + "\n")
    gateway = FakeGateway()
    real_client = batch.AsyncFaceValClient

    def with_fake(url: str, key: str, **kwargs: Any) -> AsyncFaceValClient:
        return real_client(url, key, transport=httpx.MockTransport(gateway), **kwargs)

    monkeypatch.setattr(batch, "AsyncFaceValClient", with_fake)
    messages = io.StringIO()
    status = batch.run(tmp_path, out, url="http://gw", api_key="k", stream=messages)
    assert status == 0
    assert gateway.submitted == ["b"]
    assert "2 pairs in" in messages.getvalue()
    assert "1 already in" in messages.getvalue()
    assert batch.finished_pairs(out, "jsonl") == {"a", "b"}


def test_run_with_no_pairs_fails_with_a_hint(tmp_path: Path) -> None:
    messages = io.StringIO()
    status = batch.run(
        tmp_path, tmp_path / "o.jsonl", url="http://gw", api_key="k", stream=messages
    )
    assert status == 2
    assert "<name>_near.jpg" in messages.getvalue()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_redraws_one_line_in_place() -> None:
    stream = _Terminal()
    progress = Progress(2, stream)
    progress.update("accepted")
    progress.update("failed")
    progress.finish()
    frames = stream.getvalue().split("\r")
    assert frames[0] == ""
    assert frames[1].startswith("[" + "#" * 14 + "." * 14 + "] 1/2  50%")
    assert frames[2].startswith("[" + "#" * 28 + "] 2/2 100%")
    assert frames[2].endswith("| accepted 1 failed 1\x1b[K\n")
