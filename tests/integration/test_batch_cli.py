"""`faceval submit --batch` and the Python clients, against the session's real stack."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from client.batch import finished_pairs
from client.client import ApiError, AsyncFaceValClient, FaceValClient
from shared.pipeline import STAGES
from tests.integration.conftest import ApiClient
from tools.samples import SamplePair, write_samples
from tools.stack import Stack

pytestmark = pytest.mark.integration


def _faceval(stack: Stack, key: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FACEVAL_API_KEY": key}
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *args, "--url", stack.url],
        capture_output=True, text=True, timeout=300, env=env, check=False,
    )  # fmt: skip


def _records(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SamplePair]]:
    folder = tmp_path_factory.mktemp("batch-pairs")
    return folder, [sample for sample, _, _ in write_samples(folder)]


def test_a_folder_batch_validates_every_pair_and_resumes_after_an_interruption(
    stack: Stack, client_a: ApiClient, pairs: tuple[Path, list[SamplePair]], tmp_path: Path
) -> None:
    folder, samples = pairs
    out = tmp_path / "results.jsonl"
    done = _faceval(stack, client_a.key, "submit", "--batch", str(folder), "--out", str(out),
                    "--concurrency", "3")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"{len(samples)}/{len(samples)} 100%" in done.stderr
    records = {r["pair"]: r for r in _records(out)}
    assert set(records) == {s.name for s in samples}
    for sample in samples:
        record = records[sample.name]
        assert record["outcome"] == "completed", record
        assert record["summary_reason"] == sample.expected_reason, record
        assert record.get("decided_by") == sample.expected_stage, record
        assert record["result"]["transaction_id"] == record["transaction_id"]
        stages = record["result"]["stages"]
        ran = STAGES if sample.expected_stage is None else ("face_detector",)
        for stage in ran:
            for side in ("near", "far"):
                assert stages[stage][side]["time_ms"] > 0
                assert stages[stage][side]["queue_time_ms"] >= 0

    # Interrupted after three pairs, the last line half written: a rerun does only the rest.
    lines = out.read_text().splitlines()
    kept = {json.loads(line)["pair"]: json.loads(line)["transaction_id"] for line in lines[:3]}
    out.write_text("\n".join(lines[:3]) + "\n" + lines[3][:40])
    again = _faceval(stack, client_a.key, "submit", "--batch", str(folder), "--out", str(out))
    assert again.returncode == 0, again.stderr
    assert "3 already in" in again.stderr
    assert f"{len(samples) - 3} to submit" in again.stderr
    records_after = _records(out)
    assert len(records_after) == len(samples)
    for record in records_after:
        if record["pair"] in kept:
            assert record["transaction_id"] == kept[record["pair"]]
    assert finished_pairs(out, "jsonl") == {s.name for s in samples}

    nothing = _faceval(stack, client_a.key, "submit", "--batch", str(folder), "--out", str(out))
    assert nothing.returncode == 0, nothing.stderr
    assert "0 to submit" in nothing.stderr
    assert len(_records(out)) == len(samples)


def test_a_csv_batch_writes_csv_with_per_stage_times(
    stack: Stack, client_a: ApiClient, pairs: tuple[Path, list[SamplePair]], tmp_path: Path
) -> None:
    folder, _ = pairs
    source = tmp_path / "pairs.csv"
    source.write_text(
        "near,far,user_id,process_guid\n"
        f"{folder}/astronaut_near.jpg,{folder}/astronaut_far.jpg,111,"
        "7d9f3c1e-8e8a-4c55-9d1c-1b2f3a4b5c6d\n"
        f"{folder}/no_face_near.jpg,{folder}/no_face_far.jpg,222,\n"
    )
    out = tmp_path / "results.csv"
    done = _faceval(stack, client_a.key, "submit", "--batch", str(source), "--out", str(out))
    assert done.returncode == 0, done.stderr
    rows = {Path(r["near"]).name: r for r in csv.DictReader(out.open())}
    accepted, no_face = rows["astronaut_near.jpg"], rows["no_face_near.jpg"]
    assert (accepted["outcome"], accepted["summary_reason"]) == ("completed", "accepted")
    assert (no_face["summary_reason"], no_face["decided_by"]) == ("no_face", "face_detector")
    for stage in STAGES:
        for side in ("near", "far"):
            assert float(accepted[f"{stage}_{side}_time_ms"]) > 0
            assert float(accepted[f"{stage}_{side}_queue_time_ms"]) >= 0
    assert float(no_face["face_detector_far_time_ms"]) > 0
    assert no_face["accessory_near_time_ms"] == ""


def test_a_batch_with_a_bad_key_records_failures_that_a_rerun_retries(
    stack: Stack, pairs: tuple[Path, list[SamplePair]], tmp_path: Path
) -> None:
    folder, samples = pairs
    out = tmp_path / "results.jsonl"
    done = _faceval(stack, "fv_not-a-key", "submit", "--batch", str(folder), "--out", str(out))
    assert done.returncode == 1
    assert "run the same command again" in done.stderr
    records = _records(out)
    assert {r["outcome"] for r in records} == {"failed"}
    assert {r["error_code"] for r in records} == {"unauthorized"}
    assert finished_pairs(out, "jsonl") == set()
    assert len(records) == len(samples)


def test_the_sync_and_async_clients_validate_on_the_real_gateway(
    stack: Stack, client_a: ApiClient, pairs: tuple[Path, list[SamplePair]]
) -> None:
    folder, _ = pairs
    near, far = folder / "astronaut_near.jpg", folder / "astronaut_far.jpg"
    with FaceValClient(stack.url, client_a.key) as api:
        result = api.validate(near, far, user_id="sync-user", timeout=90)
        assert (result["status"], result["summary_reason"]) == ("completed", "accepted")
        assert api.get(result["transaction_id"])["transaction_id"] == result["transaction_id"]
        assert any(c["reason"] == "accepted" for c in api.codes()["summary_codes"])

    async def go() -> tuple[dict[str, Any], ApiError]:
        async with AsyncFaceValClient(stack.url, client_a.key) as api:
            accepted = await api.submit(near.read_bytes(), far.read_bytes(),
                                        user_id="async-user", wait=0)  # fmt: skip
            final = await api.wait_result(accepted["transaction_id"], timeout=90)
        async with AsyncFaceValClient(stack.url, "fv_wrong") as bad:
            try:
                await bad.get(final["transaction_id"])
            except ApiError as exc:
                return final, exc
        raise AssertionError("a wrong key was accepted")

    final, error = asyncio.run(go())
    assert (final["status"], final["summary_reason"]) == ("completed", "accepted")
    assert (error.status, error.code) == (401, "unauthorized")
