"""Upload inspection and the one image decoder every stage uses.

The gateway stores the client's original bytes; every consumer decodes them with
`decode_rgb`, so EXIF orientation and colour conversion are applied the same way
everywhere.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps, UnidentifiedImageError

from shared.analysis import Image

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")
_JPEG_END = b"\xff\xd9"

# We enforce our own pixel limit from the header; Pillow's would warn or raise differently.
PILImage.MAX_IMAGE_PIXELS = None


class ImageRejected(Exception):
    """An upload that fails a check; `code` is a stable upload error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CheckedImage:
    format: str
    width: int
    height: int
    size_bytes: int


def _has_known_magic(data: bytes) -> bool:
    return data.startswith(_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def inspect_upload(data: bytes, *, max_bytes: int, max_pixels: int, min_side: int) -> CheckedImage:
    """Check an upload fully (size, real format, pixel limit, decodability, dimensions)."""
    if not data:
        raise ImageRejected("empty_file", "The uploaded file is empty.")
    if len(data) > max_bytes:
        raise ImageRejected(
            "file_too_large", f"The file is {len(data)} bytes; the limit is {max_bytes}."
        )
    if not _has_known_magic(data):
        raise ImageRejected(
            "unsupported_format", "The file is not a JPEG, PNG or WebP image (by its content)."
        )
    try:
        with PILImage.open(io.BytesIO(data)) as img:
            if img.format not in FORMATS:
                raise ImageRejected("unsupported_format", f"{img.format} images are not accepted.")
            width, height = img.size
            # Before decoding anything: a tiny file can declare a gigantic canvas.
            if width * height > max_pixels:
                raise ImageRejected(
                    "image_too_large",
                    f"The image is {width}x{height}; at most {max_pixels} pixels are accepted.",
                )
            if getattr(img, "n_frames", 1) > 1:
                raise ImageRejected(
                    "unsupported_format", "Animated images are not accepted; send one frame."
                )
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                img.load()
            oriented = ImageOps.exif_transpose(img)
            width, height = oriented.size
            fmt = str(img.format)
    except ImageRejected:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Warning) as exc:
        raise ImageRejected(
            "image_undecodable", f"The image could not be decoded ({type(exc).__name__})."
        ) from exc
    if min(width, height) < min_side:
        raise ImageRejected(
            "image_too_small",
            f"The image is {width}x{height}; both sides must be at least {min_side} pixels.",
        )
    return CheckedImage(format=fmt, width=width, height=height, size_bytes=len(data))


def decode_rgb(data: bytes) -> Image:
    """Decode to an RGB uint8 array with EXIF orientation applied.

    Colour and greyscale JPEGs (nearly every selfie) are decoded by OpenCV: the same
    libjpeg-turbo decode as Pillow's, pixel for pixel (tests/unit/test_imaging.py, and on
    every photo of ../shared/data), in about 12 % less time (docs/benchmarks.md), straight
    into the array and with the GIL released, so near and far decode at the same time. Every
    other format and mode (CMYK JPEGs, PNG, WebP, 16-bit) goes through Pillow, and so does a JPEG
    that does not end with its end-of-image marker (truncated, or with bytes after it):
    Pillow raises on a truncated one, as it always did, where libjpeg may only warn.
    """
    with PILImage.open(io.BytesIO(data)) as img:
        if img.format == "JPEG" and img.mode in ("RGB", "L") and data.endswith(_JPEG_END):
            decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if decoded is not None:
                # IMREAD_COLOR applies the EXIF orientation, as exif_transpose does below.
                return np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), dtype=np.uint8)
        img.load()
        oriented = ImageOps.exif_transpose(img)
        if oriented.mode in ("I;16", "I;16B", "I;16L", "I"):
            # 16-bit: scale to 8 bits instead of letting convert() clip at 255.
            wide = np.asarray(oriented, dtype=np.uint32)
            peak = max(int(wide.max()), 1)
            gray = (wide * 255 // peak).astype(np.uint8)
            return np.ascontiguousarray(np.stack([gray] * 3, axis=-1))
        rgb = oriented.convert("RGB")
        return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8))


def encode_jpeg(image: Image, quality: int = 92) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()
