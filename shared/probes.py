"""Kubernetes/compose probes of a stage worker, and the heartbeat they read.

    python -m shared.probes ready   # exit 0: an AMQP connection to the broker is open
    python -m shared.probes alive   # exit 0: not hung (heartbeat fresh, no job stuck)

Readiness takes the broker's host and port from FACEVAL_BROKER_URL (or its secret file),
so amqps (5671) or any other port works; it looks for an established TCP connection to
one of the host's addresses in this network namespace (/proc/net/tcp*), which costs the
broker nothing. Liveness reads the heartbeat file the worker's consumer loop rewrites every
few seconds (`install_heartbeat`): a loop that stopped turning while connected, or a job
running longer than FACEVAL_PROBE_MAX_JOB_SECONDS, is a hung worker. With no broker
connection (an outage, a reconnect) liveness passes: restarting every worker would not
bring the broker back.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from shared.settings import get_settings

HEARTBEAT_NAME = "worker-heartbeat.json"
BEAT_SECONDS = 5.0
#: A heartbeat older than this, while connected, means the consumer loop is stuck.
STALE_SECONDS = float(os.environ.get("FACEVAL_PROBE_STALE_SECONDS", "60"))
#: Longer than any real job (well under a second on CPU) by orders of magnitude.
MAX_JOB_SECONDS = float(os.environ.get("FACEVAL_PROBE_MAX_JOB_SECONDS", "300"))
_DEFAULT_PORTS = {"amqp": 5672, "amqps": 5671, "pyamqp": 5672}
_ESTABLISHED = "01"


def heartbeat_path() -> Path:
    """The worker's heartbeat file: `<state_dir>/<stage>-worker-heartbeat.json` when the
    probe knows its stage (FACEVAL_PROBE_STAGE, set in each worker's pod spec), else the
    only such file in the state directory."""
    state = Path(get_settings().state_dir)
    stage = os.environ.get("FACEVAL_PROBE_STAGE")
    if stage:
        return state / f"{stage}-{HEARTBEAT_NAME}"
    found = sorted(state.glob(f"*-{HEARTBEAT_NAME}"))
    return found[0] if len(found) == 1 else state / HEARTBEAT_NAME


def broker_endpoints(url: str) -> set[tuple[str, int]]:
    """(address, port) of every broker a (possibly `;`-separated failover) URL names."""
    endpoints: set[tuple[str, int]] = set()
    for part in url.split(";"):
        parts = urlsplit(part.strip())
        if not parts.hostname:
            continue
        port = parts.port or _DEFAULT_PORTS.get(parts.scheme.split("+")[0], 5672)
        try:
            infos = socket.getaddrinfo(parts.hostname, port, proto=socket.IPPROTO_TCP)
        except OSError:
            continue
        endpoints |= {(str(ipaddress.ip_address(i[4][0])), port) for i in infos}
    return endpoints


def _address(hex_address: str) -> tuple[str, int]:
    """/proc/net/tcp's `0100007F:1628` (little-endian words) as ('127.0.0.1', 5672)."""
    host, port = hex_address.split(":")
    raw = bytes.fromhex(host)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address), int(port, 16)


def established_remotes(proc_net: Path = Path("/proc/net")) -> set[tuple[str, int]]:
    remotes: set[tuple[str, int]] = set()
    for name in ("tcp", "tcp6"):
        table = proc_net / name
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            if len(fields) > 3 and fields[3] == _ESTABLISHED:
                remotes.add(_address(fields[2]))
    return remotes


def connected_to_broker() -> bool:
    return bool(broker_endpoints(get_settings().broker_url) & established_remotes())


def hung_reason(beat: dict[str, Any] | None, connected: bool, now: float) -> str | None:
    """Why the worker counts as hung, or None when it is alive."""
    started = (beat or {}).get("job_started")
    if started is not None and now - float(started) > MAX_JOB_SECONDS:
        return f"a job has run for {now - float(started):.0f} s (> {MAX_JOB_SECONDS:.0f} s)"
    if not connected:
        return None
    if beat is None:
        return "connected to the broker but no heartbeat was ever written"
    age = now - float(beat["beat"])
    if age > STALE_SECONDS:
        return f"the consumer loop last beat {age:.0f} s ago (> {STALE_SECONDS:.0f} s)"
    return None


def read_heartbeat(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data


# --- the worker side ----------------------------------------------------------------------


class Heartbeat:
    """What the worker writes: the loop's last beat and when the oldest running job began."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._jobs: dict[int, float] = {}
        self._lock = threading.Lock()

    def beat(self) -> None:
        with self._lock:
            started = min(self._jobs.values(), default=None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.partial")
        partial.write_text(json.dumps({"beat": time.time(), "job_started": started}))
        partial.replace(self.path)

    @contextmanager
    def job(self) -> Iterator[None]:
        """Wrap each task's work: a job stuck inside it is seen by the liveness probe."""
        key = threading.get_ident()
        with self._lock:
            self._jobs[key] = time.time()
        try:
            yield
        finally:
            with self._lock:
                self._jobs.pop(key, None)


def install_heartbeat(app: Any, heartbeat: Heartbeat) -> None:
    """Beat from the Celery consumer's own timer, so a stuck consumer loop stops beating."""
    from celery import bootsteps

    class _Beat(bootsteps.StartStopStep):  # type: ignore[misc]
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def start(self, consumer: Any) -> None:
            heartbeat.beat()
            self._timer = consumer.timer.call_repeatedly(BEAT_SECONDS, heartbeat.beat)

        def stop(self, consumer: Any) -> None:
            timer = getattr(self, "_timer", None)
            if timer is not None:
                timer.cancel()

    app.steps["consumer"].add(_Beat)


def main(argv: list[str]) -> int:
    if argv[1:] == ["ready"]:
        if connected_to_broker():
            return 0
        print("not ready: no established connection to the broker", file=sys.stderr)
        return 1
    if argv[1:] == ["alive"]:
        reason = hung_reason(read_heartbeat(heartbeat_path()), connected_to_broker(), time.time())
        if reason is None:
            return 0
        print(f"hung: {reason}", file=sys.stderr)
        return 1
    print("usage: python -m shared.probes ready|alive", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
