"""Run inside the built image (scripts/build-image.sh): what a container needs to start.

No compiler on PATH; the dependency set whole with one headless OpenCV; every model the
manifest bundles (package sources) materialised and verified, operator and URL models
absent or verified, never a wrong file; each stage worker's preflight passes and its
models load (those not installed are recorded as not run); the gateway app builds.
"""

from __future__ import annotations

import importlib
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from check_image_deps import problems

from shared.analysis import UnavailableModel
from shared.models_registry import Registry, status_of
from shared.pipeline import STAGES
from shared.settings import get_settings

COMPILERS = ("cc", "gcc", "g++", "c++", "clang", "make")


def main() -> int:
    failures: list[str] = []
    failures += [f"{c} is on PATH: no compiler ships" for c in COMPILERS if shutil.which(c)]
    failures += problems(set())

    settings = get_settings()
    registry = Registry.from_settings(settings)
    for entry in registry.manifest:
        state = status_of(entry, registry.model_dir)
        # Shipped with the code or its packages: must be there. Operator, URL and converted
        # files may be absent (recorded as not run), never wrong.
        allowed = {"package": {"verified"}, "bundled": {"verified"}, "algorithm": {"builtin"}}.get(
            entry.source.kind, {"missing", "verified"}
        )
        mark = "ok" if state in allowed else "WRONG"
        print(f"model {entry.name:<28} {entry.source.kind:<9} {state:<9} {mark}")
        if state not in allowed:
            failures.append(f"model {entry.name} ({entry.source.kind}) is {state}")

    from shared.worker import check_models

    for stage in STAGES:
        found = check_models(stage, settings)
        failures += [f"{stage} preflight: {p}" for p in found]
        start = time.perf_counter()
        try:
            definition = importlib.import_module(f"services.{stage}.stage").STAGE
            models = definition.build_models(settings)
        except Exception as exc:  # every stage is checked, each failure reported
            failures.append(f"{stage} worker cannot load its models: {exc}")
            continue
        took = time.perf_counter() - start
        ready = [m.key for m in models if not isinstance(m, UnavailableModel)]
        absent = [m.key for m in models if isinstance(m, UnavailableModel)]
        print(f"worker {stage:<14} preflight ok={not found} loaded {ready} "
              f"not installed {absent} in {took:.1f} s")  # fmt: skip

    from gateway.app import create_app

    create_app(settings)
    print("gateway app builds")
    for failure in failures:
        print(f"image check FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
