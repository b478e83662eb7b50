"""A session-wide real stack: RabbitMQ and Redis (found or started), a fresh secantusdb
MongoDB-wire server, and the real gateway and four workers as separate processes.

Queues get a unique prefix and MongoDB a fresh server, so a stack a developer runs on the
same machine is never disturbed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest

from shared.pipeline import STAGES, queue_name
from shared.queues import pika_url, stage_queue_stats
from shared.settings import Settings, get_settings
from shared.storage import Doc, Store
from tools.chaos import CHAOS_ENV
from tools.stack import RabbitNode, Stack, create_client, free_port, isolated_stack, stop_isolated

pytestmark = pytest.mark.integration


@dataclass
class ApiClient:
    name: str
    key: str
    http: httpx.Client


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    state = tmp_path_factory.mktemp("stack")
    port = free_port()
    env = {
        "FACEVAL_MONGO_URL": f"mongodb://127.0.0.1:{free_port()}/?retryWrites=false",
        "FACEVAL_MONGO_DB": "faceval_test",
        "FACEVAL_QUEUE_PREFIX": f"faceval-test-{uuid.uuid4().hex[:8]}",
        "FACEVAL_STATE_DIR": str(state),
        "FACEVAL_PORT": str(port),
        "FACEVAL_SWEEP_INTERVAL_SECONDS": "1",
        "FACEVAL_TRANSACTION_DEADLINE_SECONDS": "90",
    }
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    get_settings.cache_clear()
    settings = Settings()
    stack = Stack(settings=settings, port=port, state_dir=state, default_metrics_ports=False)
    try:
        stack.ensure_infrastructure()
        stack.start_services()
        stack.wait_ready()
        yield stack
    finally:
        stack.stop()
        _delete_queues(settings)
        patch.undo()
        get_settings.cache_clear()


@pytest.fixture(scope="session")
def isolated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack on servers of its own (a private RabbitMQ node, Redis and MongoDB-wire server)
    for tests that kill or restart them: the machine's shared servers are never touched."""
    if not RabbitNode.available():
        pytest.skip("rabbitmq-server not found: apt-get install -y rabbitmq-server")
    stack = isolated_stack(tmp_path_factory.mktemp("isolated"), CHAOS_ENV)
    yield stack
    stop_isolated(stack)


@pytest.fixture(scope="session")
def isolated_client(isolated: Stack) -> Iterator[ApiClient]:
    name = f"fault-{uuid.uuid4().hex[:6]}"
    _, key = asyncio.run(create_client(isolated.settings, name))
    http = httpx.Client(base_url=isolated.url, headers={"X-API-Key": key}, timeout=60)
    yield ApiClient(name=name, key=key, http=http)
    http.close()


def _delete_queues(settings: Settings) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(pika_url(settings.broker_url)))
    try:
        channel = connection.channel()
        for stage in STAGES:
            channel.queue_delete(queue_name(stage, settings.queue_prefix))
        channel.queue_delete(f"{settings.queue_prefix}.dead_letters")
    finally:
        connection.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from cli.main import main; main()", *args],
        capture_output=True, text=True, timeout=120, env=os.environ.copy(), check=False,
    )  # fmt: skip


def _client(stack: Stack, name: str) -> ApiClient:
    done = cli("client", "create", name)
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    http = httpx.Client(base_url=stack.url, headers={"X-API-Key": key}, timeout=60)
    return ApiClient(name=name, key=key, http=http)


@pytest.fixture(scope="session")
def client_a(stack: Stack) -> Iterator[ApiClient]:
    client = _client(stack, f"bank-a-{uuid.uuid4().hex[:6]}")
    yield client
    client.http.close()


@pytest.fixture(scope="session")
def client_b(stack: Stack) -> Iterator[ApiClient]:
    client = _client(stack, f"bank-b-{uuid.uuid4().hex[:6]}")
    yield client
    client.http.close()


def submit(
    client: ApiClient, near: bytes, far: bytes, wait: float = 30, **form: str
) -> httpx.Response:
    files = {"near": ("near.jpg", near, "image/jpeg"), "far": ("far.jpg", far, "image/jpeg")}
    return client.http.post(
        "/v1/validations", params={"wait": wait}, files=files,
        data={"user_id": "12345678", **form},
    )  # fmt: skip


def wait_final(client: ApiClient, transaction_id: str, seconds: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        body: dict[str, Any] = client.http.get(
            f"/v1/validations/{transaction_id}", params={"wait": 10}
        ).json()
        if body["status"] == "completed" or time.monotonic() > deadline:
            return body


@pytest.fixture
def read_doc(stack: Stack) -> Callable[[str], Doc | None]:
    """Read a transaction document straight from MongoDB, as the ETL would."""

    def read(transaction_id: str) -> Doc | None:
        async def go() -> Doc | None:
            store = Store(stack.settings.mongo_url, stack.settings.mongo_db)
            try:
                return await store.get_transaction(transaction_id)
            finally:
                store.close()

        return asyncio.run(go())

    return read


@pytest.fixture
def log_dir(stack: Stack) -> Path:
    return stack.log_dir


def in_frozen_hands(stack: Stack, stage: str, transaction_id: str) -> Callable[[], bool]:
    """Whether a transaction's jobs for `stage` are in its frozen worker's hands: published
    (the stage before decided) and none left waiting in the queue (a worker's two task
    threads take both)."""
    from pymongo import MongoClient

    def check() -> bool:
        index = STAGES.index(stage)  # type: ignore[arg-type]
        if index > 0:
            with MongoClient(stack.settings.mongo_url, serverSelectionTimeoutMS=3000) as client:
                doc = (
                    client[stack.settings.mongo_db]["transactions"].find_one(
                        {"_id": transaction_id}
                    )
                    or {}
                )
            if "decision" not in doc.get("stages", {}).get(STAGES[index - 1], {}):
                return False
        return (
            stage_queue_stats(stack.settings.broker_url, stack.settings.queue_prefix)[stage].ready
            == 0
        )

    return check


def wait_for(predicate: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def with_store(stack: Stack, work: Callable[[Store], Any]) -> Any:
    """Run `work(store)` (a coroutine) against the stack's MongoDB, as the ETL would."""

    async def go() -> Any:
        store = Store(stack.settings.mongo_url, stack.settings.mongo_db)
        try:
            return await work(store)
        finally:
            store.close()

    return asyncio.run(go())


def client_id(stack: Stack, client: ApiClient) -> str:
    async def find(store: Store) -> str:
        found = await store.client_by_name(client.name)
        assert found is not None
        return str(found["_id"])

    return str(with_store(stack, find))


@contextlib.contextmanager
def running_prometheus(config: Path, directory: Path) -> Iterator[httpx.Client]:
    """Debian's Prometheus on a free port with this config, until the block ends."""
    from tests.deploy.catalogue import tool

    port = free_port()
    log = (directory / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [tool("prometheus"), f"--config.file={config}",
         f"--storage.tsdb.path={directory / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def ready() -> bool:
        assert process.poll() is None, f"Prometheus exited with {process.returncode}"
        try:
            return client.get("/-/ready").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(ready, 60, "Prometheus did not become ready")
        yield client
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()


def prom_query(client: httpx.Client, expr: str) -> list[dict[str, Any]]:
    """An instant query's result; the query must parse and succeed."""
    response = client.get("/api/v1/query", params={"query": expr})
    assert response.status_code == 200, f"{expr}: {response.text}"
    body = response.json()
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def fast_rule_files(directory: Path) -> list[str]:
    """Copies of the repository's Prometheus rule files, evaluated every second (not 30 s)."""
    import yaml

    from tests.deploy.catalogue import RULE_FILES

    paths = []
    for path in RULE_FILES:
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        copy = directory / path.name
        copy.write_text(yaml.safe_dump(rules))
        paths.append(str(copy))
    return paths
