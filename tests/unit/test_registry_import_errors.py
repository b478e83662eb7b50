"""A package model whose package is installed but fails to import shows the real error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shared.models_registry import ModelEntry, ModelNotReady, Source, materialise


def _entry(attribute: str) -> ModelEntry:
    return ModelEntry(
        name="probe", task="detect", stage="face_detector", version="1", licence="MIT",
        source=Source(kind="package", package="probe-pkg==1.0", attribute=attribute),
        file="probe.onnx",
    )  # fmt: skip


def test_a_missing_package_is_reported_as_not_installed(tmp_path: Path) -> None:
    with pytest.raises(ModelNotReady, match=r"package probe-pkg==1.0 is not installed"):
        materialise(_entry("faceval_absent_probe.weights:WEIGHTS"), tmp_path)


def test_a_package_that_fails_to_import_shows_its_import_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "src" / "faceval_broken_probe"
    package.mkdir(parents=True)
    # What a second OpenCV without libGL looks like from the package importing it.
    (package / "__init__.py").write_text(
        "raise ImportError('libGL.so.1: cannot open shared object file: No such file')\n"
    )
    (package / "weights.py").write_text("WEIGHTS = b'x'\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    monkeypatch.delitem(sys.modules, "faceval_broken_probe", raising=False)
    with pytest.raises(ModelNotReady, match=r"installed but cannot be imported: libGL\.so\.1"):
        materialise(_entry("faceval_broken_probe.weights:WEIGHTS"), tmp_path / "models")


def test_a_missing_dependency_of_an_installed_package_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "src" / "faceval_needy_probe"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("import faceval_absent_dependency\n")
    (package / "weights.py").write_text("WEIGHTS = b'x'\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    with pytest.raises(ModelNotReady, match=r"No module named 'faceval_absent_dependency'"):
        materialise(_entry("faceval_needy_probe.weights:WEIGHTS"), tmp_path / "models")
