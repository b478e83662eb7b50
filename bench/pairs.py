"""The image pairs every benchmark uses: the bundled samples, plus one simulated PAD reject.

No bundled sample is a presentation attack, so `print_attack` is the accepted astronaut
pair as a simulated print attack (`tools.eval.simulate.print_attack`, seed 0: the photo
printed, mounted and photographed again), which MiniFASNet rejects at PAD. It is
simulated, and the benchmarks say so wherever they use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

from shared.analysis import Image
from shared.imaging import encode_jpeg
from tools.eval.simulate import print_attack
from tools.samples import SAMPLES, astronaut_pair


@dataclass(frozen=True)
class BenchPair:
    name: str
    near: bytes
    far: bytes
    expected_reason: str
    expected_stage: str | None
    simulated: bool = False


def _print_attack() -> tuple[Image, Image]:
    near, far = astronaut_pair()
    return print_attack(near, seed=0), print_attack(far, seed=0)


@cache
def bench_pairs() -> dict[str, BenchPair]:
    """Name -> pair, JPEG-encoded once."""
    pairs: dict[str, BenchPair] = {}
    for sample in SAMPLES:
        near, far = sample.make()
        pairs[sample.name] = BenchPair(sample.name, encode_jpeg(near), encode_jpeg(far),
                                       sample.expected_reason, sample.expected_stage)  # fmt: skip
    near, far = _print_attack()
    pairs["print_attack"] = BenchPair("print_attack", encode_jpeg(near), encode_jpeg(far),
                                      "spoof_detected", "pad", simulated=True)  # fmt: skip
    return pairs


#: The pairs the throughput and latency benchmarks alternate: both go through all stages.
ACCEPTED = ("astronaut", "group_member")
