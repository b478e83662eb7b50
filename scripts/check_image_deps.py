"""Run inside the image build: the installed set is whole and has one OpenCV, the headless one.

The image installs requirements/image*.txt with --no-deps, so pip checks nothing itself.
This fails the build when a package's requirement is missing or of the wrong version
(except the two left out on purpose, see scripts/lock_image.py) or when any distribution
other than opencv-python-headless provides `cv2`. Standard library and `packaging` only.
"""

from __future__ import annotations

import sys
from importlib import metadata

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

#: Declared by a dependency and left out on purpose (scripts/lock_image.py says why).
LEFT_OUT = {"opencv-python", "libsvm-official"}
HEADLESS = "opencv-python-headless"


def problems(extras: set[str]) -> list[str]:
    installed = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions()}
    found: list[str] = []
    for name, dist in sorted(installed.items()):
        wanted = {""} | (extras if name == "faceval" else set())
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in wanted):
                continue
            needed = canonicalize_name(req.name)
            if needed in LEFT_OUT:
                continue
            have = installed.get(needed)
            if have is None:
                found.append(f"{name} requires {req}, which is not installed")
            elif not req.specifier.contains(have.version, prereleases=True):
                found.append(f"{name} requires {req}, but {have.version} is installed")
    for left_out in sorted(LEFT_OUT & set(installed)):
        found.append(f"{left_out} is installed but must not be (scripts/lock_image.py)")
    providers = metadata.packages_distributions().get("cv2", [])
    if [canonicalize_name(p) for p in providers] != [HEADLESS]:
        found.append(f"cv2 must come from {HEADLESS} alone, not {providers}")
    return found


def main() -> None:
    extras = set(sys.argv[1:])
    found = problems(extras)
    for problem in found:
        print(f"image dependencies: {problem}", file=sys.stderr)
    if found:
        sys.exit(1)
    import cv2  # the import itself is the check: no libGL needed

    print(f"image dependencies: complete; cv2 {cv2.__version__} from {HEADLESS}")


if __name__ == "__main__":
    main()
