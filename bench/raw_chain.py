"""The reference: a minimal 4-hop chain written directly on RabbitMQ with pika.

Same shape as FaceVal's pipeline: one consumer process per hop queue (durable queue,
persistent messages, prefetch 1, ack after the work), near and far as separate messages
at every hop, each hop fetching its image from Redis by key (optionally decoding it, as
FaceVal's runtime does before any model), and a join per hop (Redis INCR: the second
image of a hop to arrive publishes both of the next hop's messages, or announces the end
on `<prefix>:done:<id>` after the last hop). Message bodies are padded to the size of a
FaceVal job message (body plus headers), measured on the broker by bench.messaging.

    python -m bench.raw_chain hop INDEX --prefix P [--decode]   (one hop's consumer)

With `--models` a hop also runs its stage's production models on the decoded image (the
face the detector found travels in the message, as in FaceVal's jobs) and joins the two
images' faces in one atomic Redis round trip; run two consumers per hop and near and far
are analysed at once in separate processes (bench.model_chain): the lower bound of a
design with a process per stage, with no Celery, MongoDB or publisher confirms.

The driver side (`RawChain`) lives in the benchmark process.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pika
import redis

from bench.harness import DONE_TIMEOUT_S, DoneListener
from bench.pairs import BenchPair
from shared.analysis import Face, Image
from shared.imaging import decode_rgb
from shared.pipeline import STAGES, Policy, analyze_image
from shared.queues import pika_url
from shared.settings import get_settings

#: One hop per pipeline stage, so the raw chain does the same number of hand-offs.
HOPS = len(STAGES)


def hop_queue(prefix: str, hop: int) -> str:
    return f"{prefix}.raw.hop{hop}"


def exchange(prefix: str) -> str:
    return f"{prefix}.raw"


def declare(channel: Any, prefix: str) -> None:
    channel.exchange_declare(exchange(prefix), exchange_type="direct", durable=True)
    for hop in range(HOPS):
        channel.queue_declare(hop_queue(prefix, hop), durable=True)
        channel.queue_bind(hop_queue(prefix, hop), exchange(prefix), hop_queue(prefix, hop))


def body(tid: str, side: str, size: int, face: dict[str, Any] | None = None) -> bytes:
    data: dict[str, Any] = {"id": tid, "side": side, "face": face, "pad": ""}
    short = len(json.dumps(data).encode())
    data["pad"] = "x" * max(0, size - short)
    return json.dumps(data).encode()


def publish(
    channel: Any, prefix: str, hop: int, tid: str, side: str, size: int,
    face: dict[str, Any] | None = None,
) -> None:  # fmt: skip
    channel.basic_publish(
        exchange(prefix), hop_queue(prefix, hop), body(tid, side, size, face),
        pika.BasicProperties(delivery_mode=2, headers={"published_ns": time.time_ns()}),
    )  # fmt: skip


def connect(broker_url: str, heartbeat: int = 30) -> pika.BlockingConnection:
    params = pika.URLParameters(pika_url(broker_url))
    params.connection_attempts = 3
    params.heartbeat = heartbeat
    return pika.BlockingConnection(params)


def run_hop(hop: int, prefix: str, decode: bool, models: bool = False) -> None:
    settings = get_settings()
    store = redis.Redis.from_url(settings.redis_url)
    connection = connect(settings.broker_url)
    channel = connection.channel()
    declare(channel, prefix)
    channel.basic_qos(prefetch_count=1)
    last = hop == HOPS - 1
    analyse = _stage_analysis(hop) if models else None

    def on_message(ch: Any, method: Any, _props: Any, raw: bytes) -> None:
        message = json.loads(raw)
        tid, side = message["id"], message["side"]
        data = store.get(f"{prefix}:img:{tid}:{side}")
        if data is None:
            raise SystemExit(f"hop {hop}: image {tid}/{side} missing")
        faces: dict[str, Any] = {}
        if analyse is not None:
            face = analyse(decode_rgb(data), message.get("face"))
            key = f"{prefix}:faces:{tid}:{hop}"
            with store.pipeline(transaction=True) as pipe:
                pipe.hset(key, side, json.dumps(face))
                pipe.hgetall(key)
                _, joined = pipe.execute()
            complete = len(joined) == 2
            faces = {k.decode(): json.loads(v) for k, v in joined.items()}
        else:
            if decode:
                decode_rgb(data)
            complete = store.incr(f"{prefix}:join:{tid}:{hop}") == 2
        if complete:
            if last:
                store.publish(f"{prefix}:done:{tid}", b"1")
            else:
                for next_side in ("near", "far"):
                    publish(ch, prefix, hop + 1, tid, next_side, len(raw), faces.get(next_side))
        ch.basic_ack(method.delivery_tag)

    channel.basic_consume(hop_queue(prefix, hop), on_message)
    try:
        channel.start_consuming()
    finally:
        connection.close()


def _stage_analysis(hop: int) -> Callable[[Image, dict[str, Any] | None], dict[str, Any] | None]:
    """The hop's stage with its production models, loaded once: (image, face in) -> the face
    handed on. No decision: the benchmark sends pairs every stage passes, and a verdict other
    than a pass ends the hop."""
    from tools.stages import stage_definition  # only a model hop loads the models' code

    settings = get_settings()
    definition = stage_definition(STAGES[hop])
    built = definition.build_models(settings)
    policy = Policy.build(settings)

    def analyse(image: Image, face: dict[str, Any] | None) -> dict[str, Any] | None:
        given = Face.from_dict(face) if face else None
        record = analyze_image(definition, built, image, given, policy).record
        if record.verdict != "pass":
            # Only pairs every stage passes run the whole chain, as they do FaceVal's.
            raise SystemExit(f"{definition.name}: {record.verdict} {list(record.reasons)}")
        handed = record.face if record.face is not None else given
        return handed.to_dict() if handed is not None else None

    return analyse


class RawChain:
    """The benchmark side: images into Redis, first hop published, keys cleaned up."""

    def __init__(self, broker_url: str, redis_url: str, prefix: str, size: int) -> None:
        self.prefix = prefix
        self.size = size
        self.broker_url = broker_url
        self.redis = redis.Redis.from_url(redis_url)
        # No heartbeats: a blocking connection only answers them while called, and the
        # benchmark may wait on Redis for longer than two heartbeat intervals (loopback only).
        self.connection = connect(broker_url, heartbeat=0)
        self.channel = self.connection.channel()
        declare(self.channel, prefix)
        self.listener = DoneListener(redis_url, f"{prefix}:done:")

    def prepare(self, pair: BenchPair) -> str:
        tid = uuid.uuid4().hex
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{self.prefix}:img:{tid}:near", pair.near, ex=600)
            pipe.set(f"{self.prefix}:img:{tid}:far", pair.far, ex=600)
            pipe.execute()
        self.listener.expect([tid])
        return tid

    def wait(self, ids: Sequence[str], timeout: float = DONE_TIMEOUT_S) -> dict[str, float]:
        done = self.listener.wait(ids, timeout)
        self.cleanup(ids)
        return done

    def publish(self, tid: str) -> float:
        started = time.perf_counter()
        for side in ("near", "far"):
            publish(self.channel, self.prefix, 0, tid, side, self.size)
        return started

    def cleanup(self, tids: Sequence[str]) -> None:
        keys = [f"{self.prefix}:img:{t}:{s}" for t in tids for s in ("near", "far")]
        keys += [f"{self.prefix}:{kind}:{t}:{h}" for t in tids for h in range(HOPS)
                 for kind in ("join", "faces")]  # fmt: skip
        for start in range(0, len(keys), 500):
            self.redis.delete(*keys[start : start + 500])

    def delete_queues(self) -> None:
        # On a connection of its own: the benchmark's may have been closed by the broker.
        connection = connect(self.broker_url, heartbeat=0)
        try:
            channel = connection.channel()
            for hop in range(HOPS):
                channel.queue_delete(hop_queue(self.prefix, hop))
            channel.exchange_delete(exchange(self.prefix))
        finally:
            connection.close()

    def close(self) -> None:
        self.listener.close()
        try:
            if self.connection.is_open:
                self.connection.close()
        finally:
            self.redis.close()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    hop = sub.add_parser("hop", help="run one hop's consumer until stopped")
    hop.add_argument("index", type=int, choices=range(HOPS))
    hop.add_argument("--prefix", required=True)
    hop.add_argument("--decode", action="store_true", help="decode the image like FaceVal")
    hop.add_argument("--models", action="store_true", help="run the stage's models too")
    args = parser.parse_args(argv)
    run_hop(args.index, args.prefix, args.decode, args.models)


if __name__ == "__main__":
    main(sys.argv[1:])
