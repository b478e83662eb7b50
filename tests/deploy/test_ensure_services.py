"""scripts/ensure-services.sh looks where FACEVAL_BROKER_URL and FACEVAL_REDIS_URL point."""

from __future__ import annotations

import os
import subprocess

from tests.deploy.catalogue import REPO

SCRIPT = REPO / "scripts" / "ensure-services.sh"


def _run(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(SCRIPT)], env={**os.environ, "FACEVAL_SERVICES_WAIT_SECONDS": "1", **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_a_remote_broker_is_waited_for_not_installed_and_named_when_it_does_not_answer() -> None:
    done = _run(FACEVAL_BROKER_URL="amqps://u:p@broker.invalid//",
                FACEVAL_REDIS_URL="redis://:pw@cache.invalid:6380/0")  # fmt: skip
    assert done.returncode == 1
    assert "cache.invalid:6380" in done.stderr
    assert "installing" not in done.stdout and "starting" not in done.stdout


def test_the_amqps_default_port_is_5671() -> None:
    done = _run(FACEVAL_BROKER_URL="amqps://u:p@broker.invalid//")
    if "Redis does not answer" in done.stderr:
        return  # no local Redis on this machine: the broker is never reached
    assert "broker.invalid:5671" in done.stderr
