"""Bringing the whole stack up on one machine: `faceval up`, `faceval demo` and the tests.

Uses RabbitMQ and Redis where they already run (starting them if their programs are
installed), starts the embedded MongoDB-wire server when no MongoDB URL is configured and
none answers, then runs the gateway and the four workers as separate processes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from shared import apikeys
from shared.pipeline import METRICS_PORT, STAGES, StageName
from shared.queues import stage_queue_stats
from shared.settings import Settings, get_settings
from shared.storage import Store

log = logging.getLogger(__name__)


class StackError(RuntimeError):
    """The stack could not be brought up; the message says what to do."""


#: One thread per native pool in each worker: with four workers on few cores, BLAS and
#: OpenCV's per-core thread pools oversubscribe and spin (measured: -45% worker CPU per
#: pair, +18% throughput; docs/benchmarks.md). Set only where not already set.
NATIVE_THREADS: dict[str, str] = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENCV_FOR_THREADS_NUM": "1",
}


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


#: Ports free_port handed out in this process: each is bound by another process a moment
#: later, and must not be handed out twice in between.
_HANDED_OUT: set[int] = set()
_LOWEST_PORT = 10000
_rng = random.SystemRandom()


def _ephemeral_low() -> int:
    """The first port of the kernel's range for outgoing connections' local ports."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def free_port() -> int:
    """A port nothing listens on, for a server started right after.

    Taken below the kernel's ephemeral range: a port the kernel picked (bind to port 0) is
    one it may also give an outgoing connection as its local port before the server binds
    it (seen: a worker's metrics server failing with "Address already in use" under load).
    """
    low = _ephemeral_low()
    attempts = 500 if low - _LOWEST_PORT > 1000 else 0  # else no room below the range
    for _ in range(attempts):
        port = _rng.randrange(_LOWEST_PORT, low)
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("0.0.0.0", port))  # as a worker's metrics server binds
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if port_open(host, port):
            return True
        time.sleep(0.2)
    return False


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


def _venv_program(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def queue_consumers(broker_url: str, prefix: str = "faceval") -> dict[str, int]:
    return {s: q.consumers for s, q in stage_queue_stats(broker_url, prefix).items()}


def _rabbitmq_program(name: str) -> str | None:
    # The Debian wrappers on PATH switch to the rabbitmq user (whose HOME holds another
    # cookie); the scripts under /usr/lib/rabbitmq/bin run as the caller.
    direct = Path("/usr/lib/rabbitmq/bin") / name
    return str(direct) if direct.exists() else shutil.which(name)


@dataclass
class RabbitNode:
    """A private RabbitMQ node: its own name, ports, data directory and cookie.

    For fault tests: killing or restarting it never touches the machine's shared broker
    (a bare `rabbitmqctl stop_app` targets the default node whatever the broker URL says).
    Its data directory survives a restart, so durable queues and persistent messages do.
    """

    base: Path
    port: int = field(default_factory=free_port)
    dist_port: int = field(default_factory=free_port)

    @property
    def name(self) -> str:
        return f"faceval-test-{self.port}@localhost"

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    @staticmethod
    def available() -> bool:
        return _rabbitmq_program("rabbitmq-server") is not None

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            # The Erlang cookie is read from $HOME by the server and the CLI alike.
            "HOME": str(self.base),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbitmq.pid"),
        }

    def _run(self, argv: list[str], log_name: str, seconds: int) -> int:
        # Its CLI can keep a pipe open through an Erlang child: write to a file, bound it.
        with open(self.base / log_name, "ab") as out:
            done = subprocess.run(["timeout", "-s", "KILL", str(seconds), *argv], env=self.env(),
                                  stdout=out, stderr=out, check=False)  # fmt: skip
        return done.returncode

    def start(self, seconds: float = 120.0) -> None:
        program = _rabbitmq_program("rabbitmq-server")
        if program is None:
            raise StackError("rabbitmq-server is not installed: apt-get install -y rabbitmq-server")
        self.base.mkdir(parents=True, exist_ok=True)
        cookie = self.base / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(f"faceval-test-{self.port}-{os.getpid()}")
            cookie.chmod(0o400)
        (self.base / "enabled_plugins").write_text("[].\n")
        self._run([program, "-detached"], "start.log", 60)
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if port_open("127.0.0.1", self.port) and self._accepts_amqp():
                return
            time.sleep(0.3)
        raise StackError(f"RabbitMQ node {self.name} did not start; see {self.base / 'log'}")

    def _accepts_amqp(self) -> bool:
        import pika  # only the fault tests need it

        from shared.queues import pika_url

        try:
            params = pika.URLParameters(pika_url(self.url) + "?socket_timeout=2")
            pika.BlockingConnection(params).close()
            return True
        except Exception:
            return False

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError):
            return int((self.base / "rabbitmq.pid").read_text().strip())
        return None

    def kill(self) -> None:
        """SIGKILL the node (a crash: nothing flushed, nothing said to clients)."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and _alive(pid):
                time.sleep(0.1)

    def stop(self) -> None:
        """Stop this node only (by name), killing it if it does not go."""
        ctl = _rabbitmq_program("rabbitmqctl")
        if ctl is not None and self.pid() is not None and _alive(self.pid() or 0):
            self._run([ctl, "-n", self.name, "stop"], "stop.log", 60)
        self.kill()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (a child not yet reaped) is dead for our purposes.
    with contextlib.suppress(OSError):
        return " Z " not in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:4]
    return True


@dataclass
class Stack:
    settings: Settings
    port: int
    state_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)
    #: Tests set False: several stacks on one machine must never race for the same port.
    default_metrics_ports: bool = True
    #: The stack's own RabbitMQ node, when it has one (`isolated_stack`).
    rabbit: RabbitNode | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    # --- infrastructure ------------------------------------------------------------------

    def ensure_infrastructure(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._ensure_rabbitmq()
        self._ensure_redis()
        self._ensure_mongo()

    def _ensure_rabbitmq(self) -> None:
        host, port = _host_port(self.settings.broker_url, 5672)
        if port_open(host, port):
            return
        program = shutil.which("rabbitmq-server")
        if program is None or host not in ("127.0.0.1", "localhost"):
            raise StackError(
                f"RabbitMQ is not reachable at {host}:{port}. Start it, set FACEVAL_BROKER_URL, "
                "or install it: apt-get install -y rabbitmq-server"
            )
        log.info("starting RabbitMQ")
        with open(self.log_dir / "rabbitmq-start.log", "wb") as out:
            # Its CLI can keep a pipe open through an Erlang child: never pipe it.
            subprocess.run([program, "-detached"], stdout=out, stderr=out, timeout=60, check=False)
        if not wait_for_port(host, port, 90):
            raise StackError("RabbitMQ did not start within 90 s; see rabbitmq-start.log")

    def _ensure_redis(self) -> None:
        host, port = _host_port(self.settings.redis_url, 6379)
        if port_open(host, port):
            return
        program = shutil.which("redis-server")
        if program is None or host not in ("127.0.0.1", "localhost"):
            raise StackError(
                f"Redis is not reachable at {host}:{port}. Start it, set FACEVAL_REDIS_URL, "
                "or install it: apt-get install -y redis-server"
            )
        log.info("starting Redis")
        subprocess.run(
            [program, "--daemonize", "yes", "--bind", host, "--port", str(port),
             "--save", "", "--appendonly", "no"],
            check=True, timeout=30, capture_output=True,
        )  # fmt: skip
        if not wait_for_port(host, port, 30):
            raise StackError("Redis did not start within 30 s")

    def _ensure_mongo(self) -> None:
        host, port = _host_port(self.settings.mongo_url, 27017)
        if port_open(host, port):
            return
        if not self.settings.embedded_mongo or host not in ("127.0.0.1", "localhost"):
            raise StackError(f"MongoDB is not reachable at {self.settings.mongo_url}")
        program = _venv_program("secantusd-py")
        if program is None:
            raise StackError(
                "No MongoDB is reachable and the embedded server is not installed: "
                "pip install 'faceval[embedded]' or set FACEVAL_MONGO_URL."
            )
        storage = self.state_dir / "mongo"
        storage.mkdir(parents=True, exist_ok=True)
        log.info("starting the embedded MongoDB-wire server on %s:%d", host, port)
        self._spawn(
            "mongo",
            [program, "--host", host, "--port", str(port), "--storage-path", str(storage)],
        )
        if not wait_for_port(host, port, 60):
            raise StackError("the embedded MongoDB-wire server did not start; see mongo.log")

    # --- FaceVal processes -----------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], extra_env: dict[str, str] | None = None) -> None:
        env = {**os.environ, **self.env, **(extra_env or {})}
        out = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.processes[name] = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def start_worker(self, stage: StageName) -> None:
        port = METRICS_PORT[stage]
        if not self.default_metrics_ports or port_open("127.0.0.1", port):
            port = free_port()  # another stack on this machine has the default
        self.metrics_ports[stage] = port
        native = {k: v for k, v in NATIVE_THREADS.items() if k not in os.environ}
        self._spawn(stage, [sys.executable, "-m", f"services.{stage}"],
                    {"FACEVAL_METRICS_PORT": str(port), **native})  # fmt: skip

    def start_services(self) -> None:
        self.env.setdefault("FACEVAL_PORT", str(self.port))
        for stage in STAGES:
            self.start_worker(stage)
        self._spawn("gateway", [sys.executable, "-m", "gateway"])

    def wait_ready(self, seconds: float = 120.0) -> None:
        deadline = time.monotonic() + seconds
        last = "not started"
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise StackError(
                        f"{name} exited with {proc.returncode}; see {self.log_dir / name}.log"
                    )
            try:
                ready = httpx.get(f"{self.url}/readyz", timeout=3).status_code == 200
                consumers = queue_consumers(self.settings.broker_url, self.settings.queue_prefix)
                if ready and all(consumers.values()):
                    return
                last = f"gateway ready={ready}, consumers={consumers}"
            except Exception as exc:
                last = f"{type(exc).__name__}: {exc}"
            time.sleep(0.5)
        raise StackError(f"the stack was not ready within {seconds:.0f} s ({last})")

    def stop_process(self, name: str, sig: int = signal.SIGTERM, timeout: float = 15) -> None:
        proc = self.processes.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def start_redis(self) -> None:
        """A private Redis as a child process (no persistence), for fault tests: killing and
        restarting it never touches a shared one."""
        host, port = _host_port(self.settings.redis_url, 6379)
        program = shutil.which("redis-server")
        if program is None:
            raise StackError("redis-server is not installed: apt-get install -y redis-server")
        self._spawn("redis", [program, "--bind", host, "--port", str(port), "--save", "",
                              "--appendonly", "no", "--dir", str(self.state_dir)])  # fmt: skip
        if not wait_for_port(host, port, 30):
            raise StackError("the private Redis did not start; see redis.log")

    def stop(self, timeout: float = 20) -> None:
        # The gateway and workers first, together (each finishes its job in parallel), then
        # the stores they write to.
        services = [n for n in self.processes if n not in _INFRASTRUCTURE]
        for name in services:
            proc = self.processes[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name in services:
            self.stop_process(name, timeout=max(0.1, deadline - time.monotonic()))
        for name in _INFRASTRUCTURE:
            self.stop_process(name)


_INFRASTRUCTURE = ("mongo", "redis")


def isolated_stack(
    state_dir: Path,
    extra_env: dict[str, str] | None = None,
    node: RabbitNode | None = None,
    ready_seconds: float | None = None,
) -> Stack:
    """A stack on servers of its own: a private RabbitMQ node (`node`, already started, or a
    new one), Redis and MongoDB-wire server on free ports, so faults can be injected into any
    of them (`Stack.rabbit`). Started and ready; stop it with `stop_isolated`."""
    state_dir.mkdir(parents=True, exist_ok=True)
    if node is None:
        node = RabbitNode(state_dir / "rabbitmq")
        node.start()
    port = free_port()
    env = {
        "FACEVAL_BROKER_URL": node.url,
        "FACEVAL_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        "FACEVAL_MONGO_URL": f"mongodb://127.0.0.1:{free_port()}/?retryWrites=false",
        "FACEVAL_MONGO_DB": "faceval_isolated",
        "FACEVAL_STATE_DIR": str(state_dir),
        "FACEVAL_PORT": str(port),
        "FACEVAL_QUEUE_PREFIX": "faceval",
        **(extra_env or {}),
    }
    # The children see the caller's FACEVAL_* variables overridden by these; so must we.
    merged = {k: v for k, v in os.environ.items() if k.startswith("FACEVAL_")} | env
    settings = Settings.model_validate(
        {k.removeprefix("FACEVAL_").lower(): v for k, v in merged.items()}
    )
    stack = Stack(settings=settings, port=port, state_dir=state_dir, env=env,
                  default_metrics_ports=False, rabbit=node)  # fmt: skip
    try:
        stack.state_dir.mkdir(parents=True, exist_ok=True)
        stack.log_dir.mkdir(parents=True, exist_ok=True)
        stack.start_redis()
        stack.ensure_infrastructure()
        stack.start_services()
        if ready_seconds is None:
            stack.wait_ready()
        else:
            stack.wait_ready(ready_seconds)
    except BaseException:
        stop_isolated(stack)
        raise
    return stack


def stop_isolated(stack: Stack) -> None:
    try:
        stack.stop()
    finally:
        if stack.rabbit is not None:
            stack.rabbit.stop()


# --- clients (direct store access: admin operations have no HTTP route) -------------------


async def create_client(
    settings: Settings, name: str, rate_limit: int | None = None
) -> tuple[str, str]:
    store = Store(settings.mongo_url, settings.mongo_db)
    try:
        await store.ensure_indexes(settings.retention_days)
        key = apikeys.generate_key()
        client_id = apikeys.new_client_id()
        await store.create_client(client_id, name, apikeys.hash_key(key), rate_limit)
        return client_id, key
    finally:
        store.close()


async def rotate_client(settings: Settings, name: str) -> str | None:
    store = Store(settings.mongo_url, settings.mongo_db)
    try:
        key = apikeys.generate_key()
        return key if await store.rotate_client_key(name, apikeys.hash_key(key)) else None
    finally:
        store.close()


async def revoke_client(settings: Settings, name: str) -> bool:
    store = Store(settings.mongo_url, settings.mongo_db)
    try:
        return await store.revoke_client(name)
    finally:
        store.close()


def start_stack(port: int, settings: Settings | None = None) -> Stack:
    """The whole stack on this machine, ready to serve, or StackError saying what is missing."""
    settings = settings or get_settings()
    stack = Stack(settings=settings, port=port, state_dir=settings.state_dir.resolve())
    stack.ensure_infrastructure()
    stack.start_services()
    try:
        stack.wait_ready()
    except BaseException:
        stack.stop()
        raise
    return stack
