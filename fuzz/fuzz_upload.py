"""Coverage-guided fuzzing of the upload path: inspection, then the decoder every stage uses.

Run for a bounded time:  python fuzz/fuzz_upload.py -max_total_time=60 [CORPUS_DIR]
The property: any bytes either fail inspection with an ImageRejected (a stable 4xx code) or
pass it and then decode to an RGB image. Anything else is a crash worth a bug report.
"""

from __future__ import annotations

import sys

import atheris

with atheris.instrument_imports():
    from shared.imaging import ImageRejected, decode_rgb, inspect_upload

LIMITS = {"max_bytes": 2 * 1024 * 1024, "max_pixels": 4_000_000, "min_side": 16}


def check_one(data: bytes) -> None:
    try:
        inspect_upload(data, **LIMITS)
    except ImageRejected:
        return
    image = decode_rgb(data)
    assert image.ndim == 3 and image.shape[2] == 3, image.shape


def main() -> None:
    atheris.Setup(sys.argv, check_one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
