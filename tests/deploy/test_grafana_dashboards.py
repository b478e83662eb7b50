"""The provisioned Grafana dashboards: schema basics, datasources, and queries that read only
series FaceVal really exports (docs/metrics.md), parsed by promtool."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.catalogue import (
    GRAFANA_DIR,
    grafana_to_promql,
    load_catalogue,
    metric_names,
    queryable_names,
    tool,
)

DASHBOARDS = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
DATASOURCES = GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml"
PROVIDERS = GRAFANA_DIR / "provisioning" / "dashboards" / "faceval.yml"


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def _panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row's panels


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in _panels(dashboard):
        for target in panel.get("targets", []):
            yield f"panel {panel['id']} {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = re.fullmatch(r"label_values\((.+),\s*\w+\)", query)
            assert match, f"variable {variable['name']}: only label_values(series, label)"
            yield f"variable {variable['name']}", match.group(1)


def _datasource_refs(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            else:
                yield from _datasource_refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _datasource_refs(item)


def _provisioned_datasource() -> dict[str, Any]:
    datasources = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert len(datasources) == 1
    source: dict[str, Any] = datasources[0]
    return source


def test_the_required_dashboards_are_provisioned() -> None:
    assert {p.stem for p in DASHBOARDS} == {
        "faceval-overview", "faceval-stages", "faceval-queues", "faceval-clients",
        "faceval-health",
    }  # fmt: skip


def test_dashboard_uids_and_titles_are_unique() -> None:
    dashboards = [_load(p) for p in DASHBOARDS]
    uids = [d["uid"] for d in dashboards]
    titles = [d["title"] for d in dashboards]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)
    for path, dashboard in zip(DASHBOARDS, dashboards, strict=True):
        assert dashboard["uid"] == path.stem
        assert 0 < len(dashboard["uid"]) <= 40  # Grafana's limit
        assert isinstance(dashboard["schemaVersion"], int)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panel_ids_are_unique_and_grid_positions_valid(path: Path) -> None:
    dashboard = _load(path)
    panels = list(_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    boxes = []
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["y"] >= 0, panel["title"]
        assert grid["w"] >= 1 and grid["h"] >= 1, panel["title"]
        assert grid["x"] + grid["w"] <= 24, f"{panel['title']} is wider than the grid"
        boxes.append((grid["x"], grid["y"], grid["x"] + grid["w"], grid["y"] + grid["h"]))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
            assert not overlap, f"panels overlap at {a} and {b}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_datasource_reference_is_the_datasource_variable(path: Path) -> None:
    """No hard-coded uid: the dashboards import into any Grafana with a Prometheus source."""
    source = _provisioned_datasource()
    dashboard = _load(path)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == source["type"]
    refs = list(_datasource_refs(dashboard))
    assert refs
    for ref in refs:
        assert ref == {"type": source["type"], "uid": "${datasource}"}
    assert source["uid"] not in path.read_text(), "a hard-coded datasource uid is left"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_faceval_series_are_filtered_by_the_namespace_variable(path: Path) -> None:
    dashboard = _load(path)
    namespace = next(v for v in dashboard["templating"]["list"] if v["name"] == "namespace")
    assert namespace["includeAll"] and namespace["allValue"] == ".*", "compose has no namespace"
    for where, expr in _queries(dashboard):
        for match in re.finditer(r"(?<![\w:])(faceval_\w+|process_\w+)(\{[^}]*\})?", expr):
            selector = match.group(2) or ""
            assert 'namespace=~"$namespace"' in selector, f"{where}: {match.group(0)}"


def test_panels_that_are_empty_without_errors_show_zero() -> None:
    overview = _load(GRAFANA_DIR / "dashboards" / "faceval-overview.json")
    queues = _load(GRAFANA_DIR / "dashboards" / "faceval-queues.json")
    panels = {p["title"]: p for d in (overview, queues) for p in _panels(d)}
    assert "vector(0)" in panels["Errors by reason"]["targets"][0]["expr"]
    assert "vector(0)" in panels["Dead letters"]["targets"][0]["expr"]
    assert panels["Error rate"]["fieldConfig"]["defaults"]["noValue"]
    rules = (GRAFANA_DIR.parent / "prometheus" / "rules" / "faceval-recording.yml").read_text()
    assert 'status="error"}[10m])) or vector(0))' in rules


def test_every_stage_has_a_consumer_panel_in_pipeline_order() -> None:
    from shared.pipeline import STAGES

    queues = _load(GRAFANA_DIR / "dashboards" / "faceval-queues.json")
    stats = sorted((p for p in _panels(queues) if p["title"].endswith(": consumers")),
                   key=lambda p: p["gridPos"]["x"])  # fmt: skip
    assert [p["title"].split(":")[0] for p in stats] == list(STAGES)


def test_client_panels_show_names_from_the_client_info_metric() -> None:
    clients = _load(GRAFANA_DIR / "dashboards" / "faceval-clients.json")
    joined = [e for _, e in _queries(clients) if "by (client" in e]
    assert joined and all("group_left (name)" in e and "faceval_client_info" in e for e in joined)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_query_reads_only_catalogued_series(path: Path) -> None:
    allowed = queryable_names(load_catalogue())
    queries = list(_queries(_load(path)))
    assert queries
    for where, expr in queries:
        used = metric_names(expr)
        assert used, f"{where}: no series in {expr!r}"
        assert used <= allowed, f"{where}: not in docs/metrics.md: {sorted(used - allowed)}"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_panel_targets_are_well_formed(path: Path) -> None:
    for panel in _panels(_load(path)):
        if panel["type"] == "row":
            continue
        targets = panel["targets"]
        assert targets, f"{panel['title']} has no query"
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), panel["title"]
        assert panel.get("description"), f"{panel['title']}: say what the panel shows"
        if panel["type"] == "heatmap":
            assert all(t.get("format") == "heatmap" for t in targets), panel["title"]
            assert all(m.endswith("_bucket") for t in targets for m in metric_names(t["expr"]))


def test_every_query_parses_as_promql(tmp_path: Path) -> None:
    rules = []
    for path in DASHBOARDS:
        for i, (_, expr) in enumerate(_queries(_load(path))):
            rules.append({"record": f"check:{path.stem.replace('-', '_')}:{i}",
                          "expr": grafana_to_promql(expr)})  # fmt: skip
    rule_file = tmp_path / "dashboard-queries.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    done = subprocess.run(
        [tool("promtool"), "check", "rules", str(rule_file)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(rules)} rules found" in done.stdout


def test_dashboards_cover_what_operators_need() -> None:
    used: dict[str, set[str]] = {p.stem: set() for p in DASHBOARDS}
    heatmaps: set[str] = set()
    for path in DASHBOARDS:
        dashboard = _load(path)
        for _, expr in _queries(dashboard):
            used[path.stem] |= metric_names(expr)
        for panel in _panels(dashboard):
            if panel["type"] == "heatmap":
                heatmaps |= {m for t in panel["targets"] for m in metric_names(t["expr"])}
    assert {"faceval_validations_total", "faceval_validation_duration_seconds_bucket"} <= used[
        "faceval-overview"
    ]
    assert {"faceval_stage_queue_seconds_bucket", "faceval_stage_execution_seconds_bucket"} <= (
        heatmaps
    )
    assert {
        "queue_stage:rabbitmq_queue_messages_ready:max",
        "queue_stage:rabbitmq_queue_consumers:max",
    } <= used["faceval-queues"]
    assert "faceval_validations_total" in used["faceval-clients"]
    assert {"up", "process_resident_memory_bytes", "rabbitmq_connections"} <= used["faceval-health"]


def test_the_dashboard_provider_loads_the_folder_compose_mounts() -> None:
    provider = yaml.safe_load(PROVIDERS.read_text())["providers"][0]
    compose = yaml.safe_load((GRAFANA_DIR.parents[1] / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./deploy/grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    source = _provisioned_datasource()
    assert source["url"] == "http://prometheus:9090"
    assert "prometheus" in compose["services"]
