"""Every PromQL expression in deploy/ (recording rules, alerts, dashboard panels) runs on a
real Prometheus scraping a live stack under traffic: it parses, and it returns something.

The stack has a private RabbitMQ node with its Prometheus plugin, so the broker's panels and
the queue rules are checked too (the machine's shared broker has no plugin, and is not ours
to reconfigure). Traffic is accepted and rejected pairs, sent twice so that rate() sees an
increase on every series, plus one refused upload.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from shared.imaging import encode_jpeg
from tests.deploy.catalogue import (
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    RULE_FILES,
    grafana_to_promql,
    metric_names,
)
from tests.integration.conftest import (
    ApiClient,
    fast_rule_files,
    prom_query,
    running_prometheus,
    submit,
    wait_final,
    wait_for,
)
from tools.samples import astronaut_pair, blurred_pair, no_face_pair
from tools.stack import (
    RabbitNode,
    Stack,
    _rabbitmq_program,
    create_client,
    free_port,
    isolated_stack,
    stop_isolated,
)

pytestmark = pytest.mark.integration

#: Expressions that are rightly empty in a short, healthy test, by where they live. Each is
#: still sent to Prometheus, so it must parse.
MAY_BE_EMPTY: dict[str, str] = {
    # No validation ends in error here (that takes a crashed worker or a swept timeout), and
    # unlike the overview's "Errors by reason" this panel has no `or vector(0)` fallback.
    "faceval-clients.json: Errors per client": "no validation errors in a healthy run",
}


@dataclass(frozen=True)
class Expression:
    where: str
    promql: str
    #: An alert is a condition: it should be empty while all is well, so what is checked is
    #: that every series it reads exists (else it could never fire).
    alert: bool = False


def deploy_expressions() -> list[Expression]:
    found: list[Expression] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                name = rule.get("record") or rule["alert"]
                where = f"{path.name}: {name}"
                found.append(Expression(where, rule["expr"], alert="alert" in rule))
                if "record" in rule:  # the recorded series itself, as dashboards read it
                    found.append(Expression(f"{where} (recorded)", rule["record"]))
    for path in sorted((GRAFANA_DIR / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for index, target in enumerate(panel.get("targets", [])):
                where = f"{path.name}: {panel['title']}"
                if index:
                    where += f" #{index + 1}"
                found.append(Expression(where, grafana_to_promql(target["expr"])))
    return found


def _allowed_empty(where: str) -> bool:
    return where.split(" #")[0] in MAY_BE_EMPTY


# --- a stack on a RabbitMQ node that exports its metrics ----------------------------------


def _rabbit_with_metrics(base: Path) -> tuple[RabbitNode, int]:
    """A private node with rabbitmq_prometheus on a free port (advanced.config sets the port
    without the plugin's config schema, which only exists once the plugin is enabled)."""
    base.mkdir(parents=True)
    port = free_port()
    (base / "advanced.config").write_text(
        f'[{{rabbitmq_prometheus, [{{tcp_config, [{{port, {port}}}, {{ip, "127.0.0.1"}}]}}]}}].\n'
    )
    node = RabbitNode(base)
    node.start()
    plugins = _rabbitmq_program("rabbitmq-plugins")
    assert plugins is not None
    done = node._run([plugins, "-n", node.name, "enable", "rabbitmq_prometheus"], "plugins.log", 90)
    assert done == 0, f"enabling rabbitmq_prometheus failed; see {base / 'plugins.log'}"
    return node, port


@dataclass
class Live:
    stack: Stack
    rabbit_metrics_port: int
    client: ApiClient


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    if not RabbitNode.available():
        pytest.skip("rabbitmq-server not found: apt-get install -y rabbitmq-server")
    state = tmp_path_factory.mktemp("promql-live")
    node, metrics_port = _rabbit_with_metrics(state / "rabbitmq")
    env = {
        "FACEVAL_MONGO_DB": "faceval_promql",
        "FACEVAL_QUEUE_PREFIX": f"faceval-promql-{uuid.uuid4().hex[:8]}",
        "FACEVAL_TRANSACTION_DEADLINE_SECONDS": "90",
    }
    stack = isolated_stack(state, env, node=node, ready_seconds=180)
    settings = stack.settings
    http: httpx.Client | None = None
    try:
        name = f"promql-{uuid.uuid4().hex[:6]}"
        _, key = asyncio.run(create_client(settings, name))
        http = httpx.Client(base_url=stack.url, headers={"X-API-Key": key}, timeout=60)
        yield Live(stack, metrics_port, ApiClient(name=name, key=key, http=http))
    finally:
        if http is not None:
            http.close()
        stop_isolated(stack)


# --- Prometheus -----------------------------------------------------------------------------


def _render_config(live: Live, directory: Path) -> Path:
    """The compose configuration with static targets on this stack, everything every 1 s."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    stack = live.stack
    rabbit = [f"127.0.0.1:{live.rabbit_metrics_port}"]
    targets = {
        "faceval-gateway": [f"127.0.0.1:{stack.port}"],
        "faceval-workers": [f"127.0.0.1:{p}" for p in stack.metrics_ports.values()],
        "rabbitmq": rabbit,
        "rabbitmq-queues": rabbit,
    }
    for job in config["scrape_configs"]:
        job.pop("dns_sd_configs", None)
        job["static_configs"] = [{"targets": targets.pop(job["job_name"])}]
    assert not targets, f"jobs missing from prometheus.yml: {sorted(targets)}"
    config["rule_files"] = fast_rule_files(directory)
    target = directory / "prometheus.yml"
    target.write_text(yaml.safe_dump(config))
    return target


@pytest.fixture(scope="module")
def prometheus(live: Live, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    directory = tmp_path_factory.mktemp("prometheus")
    with running_prometheus(_render_config(live, directory), directory) as client:
        yield client


_query = prom_query


def _total(client: httpx.Client, expr: str) -> float:
    return sum(float(r["value"][1]) for r in _query(client, expr))


# --- traffic --------------------------------------------------------------------------------


def _pairs() -> list[tuple[str, bytes, bytes]]:
    """An accepted pair and two rejected ones (at the first stage, and at quality)."""
    made = {"accepted": astronaut_pair(), "no_face": no_face_pair(), "blurred": blurred_pair()}
    return [(name, encode_jpeg(near), encode_jpeg(far)) for name, (near, far) in made.items()]


def _drive(client: ApiClient, pairs: list[tuple[str, bytes, bytes]]) -> set[str]:
    """Each pair to its final answer; the summary reasons, and one refused upload."""
    reasons = set()
    for _, near, far in pairs:
        response = submit(client, near, far, wait=60)
        assert response.status_code in (200, 202), response.text
        body = response.json()
        if body["status"] != "completed":  # a loaded machine: poll for the result
            body = wait_final(client, body["transaction_id"])
        assert body["status"] == "completed", body
        reasons.add(body["summary_reason"])
    refused = submit(client, b"not an image", b"not an image either", wait=0)
    assert 400 <= refused.status_code < 500, refused.text
    return reasons


def _empty(client: httpx.Client, expression: Expression) -> list[str]:
    """The queries of this expression that returned nothing."""
    if not expression.alert:
        return [] if _query(client, expression.promql) else [expression.promql]
    _query(client, expression.promql)  # it must parse; firing or not is not the point
    return [name for name in sorted(metric_names(expression.promql)) if not _query(client, name)]


def test_every_deploy_expression_returns_data_from_a_live_stack(
    live: Live, prometheus: httpx.Client
) -> None:
    started = time.monotonic()
    pairs = _pairs()
    reasons = _drive(live.client, pairs)
    assert "accepted" in reasons and len(reasons) == len(pairs), reasons
    # rate() ignores a series' first sample: the second round is what every rate sees.
    validations = "sum(faceval_validations_total)"
    wait_for(lambda: _total(prometheus, validations) >= len(pairs), 30,
             "the first round's validations were never scraped")  # fmt: skip
    _drive(live.client, pairs)
    wait_for(lambda: _total(prometheus, validations) >= 2 * len(pairs), 30,
             "the second round's validations were never scraped")  # fmt: skip

    expressions = deploy_expressions()
    assert len(expressions) >= 100, len(expressions)
    unknown = set(MAY_BE_EMPTY) - {e.where.split(" #")[0] for e in expressions}
    assert not unknown, f"MAY_BE_EMPTY names expressions that no longer exist: {unknown}"

    for expression in expressions:  # every one parses, the allowed-empty ones included
        _query(prometheus, expression.promql)
    # Recording rules run every second, a moment after the scrape: give them a few rounds.
    deadline = time.monotonic() + 30
    while True:
        empty = {
            e.where: missing
            for e in expressions
            if not _allowed_empty(e.where) and (missing := _empty(prometheus, e))
        }
        if not empty or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not empty, "empty under traffic:\n" + "\n".join(
        f"  {where}: {missing}" for where, missing in empty.items()
    )
    print(f"{len(expressions)} expressions checked in {time.monotonic() - started:.1f} s")
