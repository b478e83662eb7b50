"""Upload inspection: every bad input gets its stable code before anything is queued."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image as PILImage

from shared.imaging import ImageRejected, decode_rgb, inspect_upload

LIMITS = {"max_bytes": 10 * 1024 * 1024, "max_pixels": 40_000_000, "min_side": 128}


def _encode(image: PILImage.Image, fmt: str, **kw: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def _rgb(width: int = 300, height: int = 200) -> PILImage.Image:
    rng = np.random.default_rng(0)
    return PILImage.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _code(data: bytes, **limits: int) -> str:
    with pytest.raises(ImageRejected) as caught:
        inspect_upload(data, **{**LIMITS, **limits})
    return caught.value.code


def _png_declaring(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims a huge canvas (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


def test_accepts_jpeg_png_and_webp() -> None:
    for fmt in ("JPEG", "PNG", "WEBP"):
        checked = inspect_upload(_encode(_rgb(), fmt), **LIMITS)
        assert (checked.format, checked.width, checked.height) == (fmt, 300, 200)


def test_rejects_an_empty_file() -> None:
    assert _code(b"") == "empty_file"


def test_rejects_a_file_over_the_size_limit() -> None:
    assert _code(_encode(_rgb(), "PNG"), max_bytes=100) == "file_too_large"


def test_rejects_text_renamed_as_jpeg_by_its_content() -> None:
    assert _code(b"hello, I am not an image" * 10) == "unsupported_format"


def test_rejects_other_real_image_formats() -> None:
    assert _code(_encode(_rgb(), "GIF")) == "unsupported_format"


def test_rejects_a_truncated_jpeg() -> None:
    data = _encode(_rgb(), "JPEG")
    assert _code(data[: len(data) // 2]) == "image_undecodable"


def test_rejects_a_decompression_bomb_before_decoding() -> None:
    bomb = _png_declaring(50_000, 50_000)
    assert len(bomb) < 200
    assert _code(bomb) == "image_too_large"


def test_rejects_an_image_below_the_minimum_size() -> None:
    assert _code(_encode(_rgb(100, 300), "PNG")) == "image_too_small"


def test_rejects_animated_images() -> None:
    first = _rgb()
    frames = [first, PILImage.fromarray(255 - np.asarray(first))]
    data = _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])
    assert _code(data) == "unsupported_format"


def test_applies_exif_orientation_to_dimensions_and_pixels() -> None:
    image = _rgb(300, 200)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    data = _encode(image, "JPEG", exif=exif.tobytes())
    checked = inspect_upload(data, **LIMITS)
    assert (checked.width, checked.height) == (200, 300)
    assert decode_rgb(data).shape == (300, 200, 3)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "CMYK", "P", "I;16"])
def test_decodes_any_mode_to_rgb_uint8(mode: str) -> None:
    if mode == "I;16":
        image = PILImage.fromarray(np.full((200, 200), 40000, dtype=np.uint16))
    else:
        image = _rgb(200, 200).convert(mode)
    fmt = "JPEG" if mode in ("L", "CMYK") else "PNG"
    data = _encode(image, fmt)
    inspect_upload(data, **LIMITS)
    decoded = decode_rgb(data)
    assert decoded.shape == (200, 200, 3)
    assert decoded.dtype == np.uint8
    assert decoded.max() > 0


def _pillow_reference(data: bytes) -> np.ndarray:
    from PIL import ImageOps

    with PILImage.open(io.BytesIO(data)) as img:
        img.load()
        return np.asarray(ImageOps.exif_transpose(img).convert("RGB"))


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_jpeg_decodes_as_pillow_does_pixel_for_pixel_in_every_orientation(
    orientation: int, mode: str
) -> None:
    """The JPEG fast path (OpenCV) must give exactly Pillow's pixels, EXIF orientation
    applied, or every model's input would change with the decoder."""
    rng = np.random.default_rng(orientation)
    noisy = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    image = PILImage.fromarray(noisy).convert(mode)
    exif = image.getexif()
    exif[0x0112] = orientation
    for subsampling in (0, 2):  # 4:4:4 and 4:2:0 chroma
        data = _encode(image, "JPEG", exif=exif.tobytes(), quality=90, subsampling=subsampling)
        expected = _pillow_reference(data)
        decoded = decode_rgb(data)
        assert decoded.dtype == np.uint8 and decoded.flags.c_contiguous
        np.testing.assert_array_equal(decoded, expected)


def test_real_photos_decode_as_pillow_does() -> None:
    """JPEGs of ../shared/data (one in 25) through the fast path equal Pillow's decode."""
    from pathlib import Path

    data_dir = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    photos = sorted(data_dir.rglob("*.jpg"))[::25]
    if not photos:
        pytest.skip(f"real photos not found: {data_dir} (clone ../shared beside the repository)")
    for path in photos:
        data = path.read_bytes()
        np.testing.assert_array_equal(decode_rgb(data), _pillow_reference(data), str(path))


def test_a_truncated_jpeg_still_fails_to_decode_instead_of_turning_grey() -> None:
    data = _encode(_rgb(300, 200), "JPEG", quality=90)
    with pytest.raises(OSError):
        decode_rgb(data[: len(data) * 2 // 3])
