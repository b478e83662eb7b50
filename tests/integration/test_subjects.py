"""Subjects, 1:1 and 1:N end to end: the real gateway, workers (probe transactions up to
the identity stage), the MongoDB-wire server and the embedded template index."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.imaging import encode_jpeg
from tests.integration.conftest import ApiClient, cli, submit
from tools.samples import astronaut_pair, group_member_pair, no_face_pair

pytestmark = pytest.mark.integration

LFW = Path(__file__).resolve().parents[3] / "shared" / "data" / "lfw-fold0"


def jpegs(pair: Any) -> tuple[bytes, bytes]:
    near, far = pair()
    return encode_jpeg(near), encode_jpeg(far)


@pytest.fixture(scope="module")
def astronaut() -> tuple[bytes, bytes]:
    return jpegs(astronaut_pair)


@pytest.fixture(scope="module")
def member() -> tuple[bytes, bytes]:
    return jpegs(group_member_pair)


@pytest.fixture(scope="module")
def lfw_people() -> list[list[bytes]]:
    """Two LFW people with at least two photos each."""
    if not LFW.is_dir():
        pytest.skip(f"LFW fold not found: {LFW}")
    people = [sorted(d.glob("*.jpg")) for d in sorted(LFW.iterdir()) if d.is_dir()]
    chosen = [p for p in people if len(p) >= 3][:2]
    return [[path.read_bytes() for path in photos[:3]] for photos in chosen]


def enrol(client: ApiClient, external_id: str, *images: bytes) -> httpx.Response:
    files = [("images", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(images)]
    return client.http.post("/v1/subjects", data={"external_id": external_id}, files=files)


def verify(client: ApiClient, subject_id: str, image: bytes) -> httpx.Response:
    files = {"image": ("probe.jpg", image, "image/jpeg")}
    return client.http.post(f"/v1/subjects/{subject_id}/verify", files=files)


def search(client: ApiClient, image: bytes, k: int = 5) -> httpx.Response:
    files = {"image": ("probe.jpg", image, "image/jpeg")}
    return client.http.post("/v1/search", params={"k": k}, files=files)


def enrolled(client: ApiClient, external_id: str, *images: bytes) -> dict[str, Any]:
    response = enrol(client, external_id, *images)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def test_enrols_verifies_searches_and_erases_a_subject(
    client_a: ApiClient, astronaut: tuple[bytes, bytes], member: tuple[bytes, bytes]
) -> None:
    tag = uuid.uuid4().hex[:6]
    astro = enrolled(client_a, f"astro-{tag}", astronaut[0])
    other = enrolled(client_a, f"member-{tag}", member[0], member[1])
    assert astro["images_used"] == 1 and other["images_used"] == 2
    assert astro["model"] == "dlib_resnet_v1" and astro["replaced"] is False

    same = verify(client_a, astro["subject_id"], astronaut[1])
    assert same.status_code == 200, same.text
    assert same.json()["match"] is True
    assert same.json()["similarity"] >= same.json()["threshold"]
    different = verify(client_a, astro["subject_id"], member[1]).json()
    assert different["match"] is False
    assert different["similarity"] < different["threshold"]

    found = search(client_a, astronaut[1])
    assert found.status_code == 200, found.text
    matches = found.json()["matches"]
    assert matches[0]["subject_id"] == astro["subject_id"]
    assert matches[0]["external_id"] == f"astro-{tag}"
    assert [m["similarity"] for m in matches] == sorted(
        (m["similarity"] for m in matches), reverse=True
    )

    got = client_a.http.get(f"/v1/subjects/{astro['subject_id']}").json()
    assert got["external_id"] == f"astro-{tag}"
    assert "template" not in got and "images" not in got

    assert client_a.http.delete(f"/v1/subjects/{astro['subject_id']}").status_code == 204
    assert client_a.http.get(f"/v1/subjects/{astro['subject_id']}").status_code == 404
    assert verify(client_a, astro["subject_id"], astronaut[1]).status_code == 404
    assert client_a.http.delete(f"/v1/subjects/{astro['subject_id']}").status_code == 404
    after = search(client_a, astronaut[1]).json()["matches"]
    assert astro["subject_id"] not in [m["subject_id"] for m in after]


def test_enrolling_an_external_id_again_replaces_its_template(
    client_a: ApiClient, astronaut: tuple[bytes, bytes], member: tuple[bytes, bytes]
) -> None:
    external = f"reenrol-{uuid.uuid4().hex[:6]}"
    first = enrolled(client_a, external, astronaut[0])
    second = enrolled(client_a, external, member[0])
    assert second["subject_id"] == first["subject_id"] and second["replaced"] is True
    assert verify(client_a, first["subject_id"], member[1]).json()["match"] is True
    assert verify(client_a, first["subject_id"], astronaut[1]).json()["match"] is False
    client_a.http.delete(f"/v1/subjects/{first['subject_id']}")


def test_lists_subjects_page_by_page(client_a: ApiClient, member: tuple[bytes, bytes]) -> None:
    for i in range(3):
        enrolled(client_a, f"page-{uuid.uuid4().hex[:6]}-{i}", member[0])
    seen: list[str] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"after": after} if after else {})}
        page = client_a.http.get("/v1/subjects", params=params).json()
        seen += [s["subject_id"] for s in page["items"]]
        after = page["next_after"]
        if after is None:
            break
    assert len(seen) == len(set(seen)) >= 3
    assert seen == sorted(seen)


def test_another_client_cannot_see_verify_search_or_erase_a_subject(
    client_a: ApiClient, client_b: ApiClient, astronaut: tuple[bytes, bytes]
) -> None:
    mine = enrolled(client_a, f"private-{uuid.uuid4().hex[:6]}", astronaut[0])
    sid = mine["subject_id"]
    assert client_b.http.get(f"/v1/subjects/{sid}").status_code == 404
    assert verify(client_b, sid, astronaut[1]).status_code == 404
    assert client_b.http.delete(f"/v1/subjects/{sid}").status_code == 404
    assert sid not in [s["subject_id"] for s in client_b.http.get("/v1/subjects").json()["items"]]
    theirs = search(client_b, astronaut[1]).json()["matches"]
    assert sid not in [m["subject_id"] for m in theirs]
    # Still there for its owner.
    assert client_a.http.get(f"/v1/subjects/{sid}").status_code == 200
    client_a.http.delete(f"/v1/subjects/{sid}")


def test_an_image_with_no_face_is_refused_with_the_validation_reason(
    client_a: ApiClient,
) -> None:
    coffee = jpegs(no_face_pair)[0]
    response = enrol(client_a, f"nobody-{uuid.uuid4().hex[:6]}", coffee)
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "unusable_image"
    assert body["detail"]["reason"] == "no_face"
    assert body["detail"]["decided_by"] == "face_detector"
    assert search(client_a, coffee).json()["code"] == "unusable_image"


def test_more_than_three_images_are_refused(
    client_a: ApiClient, astronaut: tuple[bytes, bytes]
) -> None:
    response = enrol(client_a, "too-many", *([astronaut[0]] * 4))
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_field"


def test_a_pair_of_two_people_is_rejected_by_identity_with_face_mismatch(
    client_a: ApiClient, astronaut: tuple[bytes, bytes], member: tuple[bytes, bytes]
) -> None:
    result = submit(client_a, astronaut[0], member[1]).json()
    assert result["summary_reason"] == "face_mismatch", result
    assert result["summary_code"] == 50
    assert result["decided_by"] == "identity"
    pair = result["stages"]["identity"]["pair_scores"]
    assert pair["similarity"] < pair["threshold"]
    assert result["stages"]["pad"] is None


def test_an_lfw_pair_of_two_people_is_rejected_with_face_mismatch(
    client_a: ApiClient, lfw_people: list[list[bytes]]
) -> None:
    result = submit(client_a, lfw_people[0][0], lfw_people[1][0]).json()
    assert (result["summary_reason"], result["decided_by"]) == ("face_mismatch", "identity")


def test_an_lfw_person_enrolled_from_two_photos_is_verified_with_a_third(
    client_a: ApiClient, lfw_people: list[list[bytes]]
) -> None:
    person, other = lfw_people
    subject = enrolled(client_a, f"lfw-{uuid.uuid4().hex[:6]}", person[0], person[1])
    assert verify(client_a, subject["subject_id"], person[2]).json()["match"] is True
    assert verify(client_a, subject["subject_id"], other[0]).json()["match"] is False
    client_a.http.delete(f"/v1/subjects/{subject['subject_id']}")


def test_a_validation_answers_whether_it_is_the_subject_and_flags_duplicates(
    client_a: ApiClient, astronaut: tuple[bytes, bytes]
) -> None:
    subject = enrolled(client_a, f"doc-{uuid.uuid4().hex[:6]}", astronaut[0])
    sid = subject["subject_id"]
    result = submit(client_a, *astronaut, user_id="someone-else", subject_id=sid,
                    check_duplicates="true").json()  # fmt: skip
    assert result["summary_status"] == "accepted", result
    checks = result["identity_checks"]
    assert checks["assessed"] is True
    assert checks["subject"]["match"] is True and checks["subject"]["subject_id"] == sid
    assert checks["duplicates"]["possible_duplicate"] is True
    assert sid in checks["duplicates"]["subject_ids"]
    # Answered once: reading again gives the same stored answer.
    again = client_a.http.get(f"/v1/validations/{result['transaction_id']}").json()
    assert again["identity_checks"] == checks

    own = submit(client_a, *astronaut, user_id=subject["external_id"],
                 check_duplicates="true").json()  # fmt: skip
    assert own["identity_checks"]["duplicates"]["possible_duplicate"] is False
    assert sid in [m["subject_id"] for m in own["identity_checks"]["duplicates"]["matches"]]
    client_a.http.delete(f"/v1/subjects/{sid}")


def test_a_validation_naming_an_unknown_subject_is_refused(
    client_a: ApiClient, astronaut: tuple[bytes, bytes]
) -> None:
    response = submit(client_a, *astronaut, subject_id="no-such-subject")
    assert response.status_code == 404


def test_the_cli_enrols_lists_verifies_searches_and_erases(
    client_a: ApiClient, astronaut: tuple[bytes, bytes], tmp_path: Path
) -> None:
    near, far = tmp_path / "near.jpg", tmp_path / "far.jpg"
    near.write_bytes(astronaut[0])
    far.write_bytes(astronaut[1])
    key = ("--key", client_a.key, "--url", str(client_a.http.base_url).rstrip("/"))
    external = f"cli-{uuid.uuid4().hex[:6]}"
    added = cli("subjects", "add", external, str(near), *key)
    assert added.returncode == 0, added.stderr
    sid = json.loads(added.stdout)["subject_id"]
    listed = cli("subjects", "list", "--all", *key)
    assert sid in listed.stdout and external in listed.stdout
    verified = cli("verify", sid, str(far), *key)
    assert json.loads(verified.stdout)["match"] is True
    found = cli("search", str(far), "--k", "3", *key)
    assert json.loads(found.stdout)["matches"][0]["subject_id"] == sid
    assert cli("subjects", "delete", sid, *key).returncode == 0
    gone = cli("verify", sid, str(far), *key)
    assert gone.returncode == 1 and json.loads(gone.stderr)["code"] == "not_found"
