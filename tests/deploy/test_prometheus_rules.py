"""The Prometheus configuration, rules and alerts: promtool checks and unit tests, runbooks."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.catalogue import (
    OPERATIONS,
    PROMETHEUS_DIR,
    RULE_FILES,
    heading_anchors,
    tool,
)

RULE_TESTS = sorted((PROMETHEUS_DIR / "tests").glob("*_test.yml"))


def _promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def _alerts() -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            alerts.extend(r for r in group["rules"] if "alert" in r)
    return alerts


def test_promtool_accepts_the_rule_files() -> None:
    done = _promtool("check", "rules", *map(str, RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert RULE_TESTS, "no promtool unit tests in deploy/prometheus/tests"
    done = _promtool("test", "rules", *(str(p.relative_to(PROMETHEUS_DIR)) for p in RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_TESTS)


def test_promtool_accepts_the_compose_scrape_config_and_its_rules() -> None:
    done = _promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(RULE_FILES)} rule files found" in done.stdout


def test_promtool_accepts_the_kubernetes_scrape_config(tmp_path: Path) -> None:
    # Debian's Prometheus is built without Kubernetes discovery: check everything else by
    # swapping each kubernetes_sd_configs for a static target.
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus-k8s.yml").read_text())
    swapped = 0
    for job in config["scrape_configs"]:
        if job.pop("kubernetes_sd_configs", None) is not None:
            job["static_configs"] = [{"targets": ["placeholder:80"]}]
            swapped += 1
    assert swapped == 2, "the gateway and worker jobs use Kubernetes discovery"
    config["rule_files"] = [str(p) for p in RULE_FILES]
    target = tmp_path / "prometheus-k8s.yml"
    target.write_text(yaml.safe_dump(config))
    done = _promtool("check", "config", str(target), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_both_scrape_configs_use_the_job_names_the_rules_and_dashboards_expect() -> None:
    expected = ["faceval-gateway", "faceval-workers", "rabbitmq", "rabbitmq-queues"]
    for name in ("prometheus.yml", "prometheus-k8s.yml"):
        config = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
        assert [job["job_name"] for job in config["scrape_configs"]] == expected
        queues = config["scrape_configs"][3]
        assert queues["metrics_path"] == "/metrics/detailed"
        assert set(queues["params"]["family"]) == {"queue_coarse_metrics", "queue_consumer_count"}


def test_every_alert_fires_in_a_unit_test_and_stays_quiet_in_another() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - fired == set(), "alerts never shown to fire"
    assert names - quiet == set(), "alerts never shown to stay quiet"


def test_every_alert_has_a_severity_a_summary_and_a_runbook_section() -> None:
    anchors = heading_anchors(OPERATIONS)
    for alert in _alerts():
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        assert alert["annotations"]["summary"], alert["alert"]
        runbook = alert["annotations"]["runbook"]
        page, _, anchor = runbook.partition("#")
        assert page == "docs/operations.md", alert["alert"]
        assert anchor == alert["alert"].lower(), alert["alert"]
        assert anchor in anchors, f"{alert['alert']}: no section #{anchor} in {OPERATIONS}"


@pytest.mark.parametrize("rule_file", RULE_FILES, ids=lambda p: p.name)
def test_rule_groups_have_unique_names_and_rules(rule_file: Path) -> None:
    groups = yaml.safe_load(rule_file.read_text())["groups"]
    names = [g["name"] for g in groups]
    assert len(names) == len(set(names))
    produced = [r.get("record") or r["alert"] for g in groups for r in g["rules"]]
    assert len(produced) == len(set(produced))
