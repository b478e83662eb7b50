"""The image pairs every benchmark uses: the bundled samples, plus one simulated PAD reject.

No bundled sample is rejected at PAD (the only real attack cue the heuristics reject on
their own is a screen's pixel lattice), so `screen_replay` overlays a fine rotated 2-D
grid on the accepted astronaut pair, like a selfie filmed off a screen. It is simulated,
and the benchmarks say so wherever they use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from shared.analysis import Image
from shared.imaging import encode_jpeg
from tools.samples import SAMPLES, astronaut_pair


@dataclass(frozen=True)
class BenchPair:
    name: str
    near: bytes
    far: bytes
    expected_reason: str
    expected_stage: str | None
    simulated: bool = False


def screen_grid(
    image: Image, period: float = 3.0, angle: float = 20.0, depth: float = 0.25
) -> Image:
    """Multiply by a fine sinusoidal 2-D grid: the moire a recaptured screen shows."""
    rows, cols = np.mgrid[0 : image.shape[0], 0 : image.shape[1]].astype(np.float64)
    c, s = np.cos(np.radians(angle)), np.sin(np.radians(angle))
    u, v = cols * c + rows * s, -cols * s + rows * c
    wave_u = 1 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * u / period))
    wave_v = 1 - depth * (0.5 + 0.5 * np.sin(2 * np.pi * v / period))
    return np.clip(image * (wave_u * wave_v)[..., None], 0, 255).astype(np.uint8)


def _screen_replay() -> tuple[Image, Image]:
    near, far = astronaut_pair()
    return screen_grid(near), screen_grid(far)


@cache
def bench_pairs() -> dict[str, BenchPair]:
    """Name -> pair, JPEG-encoded once (quality 95 keeps the simulated lattice visible)."""
    pairs: dict[str, BenchPair] = {}
    for sample in SAMPLES:
        near, far = sample.make()
        pairs[sample.name] = BenchPair(sample.name, encode_jpeg(near), encode_jpeg(far),
                                       sample.expected_reason, sample.expected_stage)  # fmt: skip
    near, far = _screen_replay()
    pairs["screen_replay"] = BenchPair("screen_replay", encode_jpeg(near, quality=95),
                                       encode_jpeg(far, quality=95), "spoof_detected", "pad",
                                       simulated=True)  # fmt: skip
    return pairs


#: The pairs the throughput and latency benchmarks alternate: both go through all stages.
ACCEPTED = ("astronaut", "group_member")
