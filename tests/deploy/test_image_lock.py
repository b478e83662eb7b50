"""The image's dependency lock (requirements/image*.txt) matches pyproject.toml and keeps the
image whole: one headless OpenCV, nothing that compiles outside the `wheels` stage."""

from __future__ import annotations

import re
import tomllib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from scripts.lock_image import EXCLUDED
from tests.deploy.catalogue import REPO

LOCKS = REPO / "requirements"
_PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+) --hash=sha256:[0-9a-f]{64}$")


def _lock(name: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in (LOCKS / name).read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        assert match, f"{name}: not `name==version --hash=sha256:...`: {line}"
        pins[canonicalize_name(match[1])] = match[2]
    return pins


def _declared(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    texts = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(t) for t in texts]


def _check(requirements: list[Requirement], locked: dict[str, str]) -> None:
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in locked, f"{req} is not locked: run scripts/lock_image.py"
        assert req.specifier.contains(locked[name], prereleases=True), (
            f"{req}: the lock has {locked[name]}; run scripts/lock_image.py"
        )


def test_every_runtime_dependency_is_locked_at_a_version_pyproject_allows() -> None:
    _check(_declared(), {**_lock("image.txt"), **_lock("image-sdist.txt")})


def test_every_etl_dependency_is_locked_too() -> None:
    locked = {**_lock("image.txt"), **_lock("image-sdist.txt"), **_lock("image-etl.txt")}
    _check(_declared("etl"), locked)


def test_the_packages_left_out_stay_out_and_opencv_is_headless() -> None:
    everything = {**_lock("image.txt"), **_lock("image-sdist.txt"), **_lock("image-etl.txt")}
    assert set(EXCLUDED) == {"opencv-python", "libsvm-official"}
    assert not set(EXCLUDED) & set(everything)
    assert "opencv-python-headless" in everything
    assert not set(_lock("image.txt")) & set(_lock("image-sdist.txt"))


def test_only_the_wheels_stage_has_a_compiler() -> None:
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    stages = re.split(r"^FROM ", text, flags=re.M)[1:]
    named = {s.split("\n", 1)[0].split(" AS ")[-1].strip(): s for s in stages}
    assert "build-essential" in named["wheels"]
    for name, body in named.items():
        if name != "wheels":
            assert "build-essential" not in body and "gcc" not in body, name
    for final in ("runtime", "etl"):
        assert "--from=wheels" not in named[final], f"{final} must not copy from wheels"
