"""A real Prometheus, configured from deploy/prometheus, scrapes the running gateway and a
worker, evaluates the repository's rules, and serves a FaceVal histogram over its HTTP API."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.deploy.catalogue import (
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    grafana_to_promql,
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
from tools.stack import Stack

pytestmark = pytest.mark.integration

STAGE = "face_detector"


def _render_config(stack: Stack, directory: Path) -> Path:
    """The compose scrape config, pointed at this stack, scraping and evaluating every 1 s."""
    config: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    targets = {
        "faceval-gateway": f"127.0.0.1:{stack.port}",
        "faceval-workers": f"127.0.0.1:{stack.metrics_ports[STAGE]}",
    }
    jobs = []
    for job in config["scrape_configs"]:
        if job["job_name"] not in targets:
            continue  # RabbitMQ's plugin is not enabled on the test broker
        assert job.pop("dns_sd_configs"), "the repository's jobs discover their targets"
        job["static_configs"] = [{"targets": [targets[job["job_name"]]]}]
        jobs.append(job)
    assert [j["job_name"] for j in jobs] == list(targets)
    config["scrape_configs"] = jobs
    # The repository's rules, evaluated every second instead of every 30.
    config["rule_files"] = fast_rule_files(directory)
    target = directory / "prometheus.yml"
    target.write_text(yaml.safe_dump(config))
    return target


@pytest.fixture
def prometheus(stack: Stack, tmp_path: Path) -> Iterator[httpx.Client]:
    config = _render_config(stack, tmp_path)
    with running_prometheus(config, tmp_path) as client:
        yield client


_query = prom_query


def _value(client: httpx.Client, expr: str) -> float | None:
    """The single sample's value, or None while there is none (or it is NaN)."""
    result = _query(client, expr)
    if len(result) != 1:
        return None
    value = float(result[0]["value"][1])
    return None if math.isnan(value) else value


def _submit_and_finish(client: ApiClient, pair: tuple[bytes, bytes]) -> None:
    response = submit(client, *pair, wait=30)
    assert response.status_code in (200, 202), response.text
    body = response.json()
    if body["status"] != "completed":  # a loaded machine: poll for the result
        body = wait_final(client, body["transaction_id"])
    assert body["status"] == "completed", body


def test_a_real_prometheus_scrapes_faceval_and_serves_its_queue_histogram(
    prometheus: httpx.Client, client_a: ApiClient, astronaut_jpegs: tuple[bytes, bytes]
) -> None:
    # The histogram's series must exist before the scrape that sees them grow: rate() does
    # not count a series' first sample as an increase.
    _submit_and_finish(client_a, astronaut_jpegs)
    selector = f'faceval_stage_queue_seconds_count{{job="faceval-workers", stage="{STAGE}"}}'
    wait_for(lambda: _value(prometheus, f"sum({selector})") is not None, 30,
              "the worker's histogram was never scraped")  # fmt: skip
    before = _value(prometheus, f"sum({selector})")
    assert before is not None and before >= 2  # the near and the far image

    _submit_and_finish(client_a, astronaut_jpegs)
    wait_for(lambda: (_value(prometheus, f"sum({selector})") or 0) >= before + 2, 30,
              "the second pair's jobs were not scraped")  # fmt: skip

    quantile = (
        "histogram_quantile(0.95, sum by (le) (rate(faceval_stage_queue_seconds_bucket"
        f'{{job="faceval-workers", stage="{STAGE}"}}[1m])))'
    )
    wait_for(lambda: _value(prometheus, quantile) is not None, 30, "no p95 queue latency")
    p95 = _value(prometheus, quantile)
    assert p95 is not None and 0 < p95 <= 60, p95

    # The repository's recording rules work on the real exposition (le="1.0" included).
    slo = f'stage:faceval_stage_queue_slo_errors:ratio_rate5m{{stage="{STAGE}"}}'
    wait_for(lambda: _value(prometheus, slo) is not None, 30, "the SLO rule recorded nothing")
    ratio = _value(prometheus, slo)
    assert ratio is not None and 0 <= ratio <= 1
    recorded_p95 = f'stage:faceval_stage_queue_seconds:p95_5m{{stage="{STAGE}"}}'
    wait_for(lambda: _value(prometheus, recorded_p95) is not None, 30, "no recorded p95")

    # Both targets are up, and the gateway's own histogram arrives too.
    up = {r["metric"]["job"]: r["value"][1] for r in _query(prometheus, "up")}
    assert up == {"faceval-gateway": "1", "faceval-workers": "1"}
    requests = _value(
        prometheus,
        'sum(faceval_http_request_duration_seconds_count{job="faceval-gateway", '
        'route="/v1/validations", method="POST"})',
    )
    assert requests is not None and requests >= 2


def test_every_dashboard_query_is_accepted_by_a_real_prometheus(
    prometheus: httpx.Client,
) -> None:
    queries = 0
    for path in sorted((GRAFANA_DIR / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                _query(prometheus, grafana_to_promql(target["expr"]))
                queries += 1
    assert queries >= 40
