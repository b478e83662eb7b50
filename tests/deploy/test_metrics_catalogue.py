"""docs/metrics.md lists exactly what FaceVal exports, and the rules read only what it lists."""

from __future__ import annotations

import re
from typing import Any

import yaml
from prometheus_client.metrics import MetricWrapperBase

from shared import codes, metrics
from shared.pipeline import STAGES
from tests.deploy.catalogue import (
    CATALOGUE,
    RULE_FILES,
    load_catalogue,
    metric_names,
    queryable_names,
)


def _exported() -> dict[str, tuple[str, frozenset[str]]]:
    """shared/metrics.py's collectors: exposed name -> (type, label names)."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            kind = str(value._type)
            name = value._name + ("_total" if kind == "counter" else "")
            found[name] = (kind, frozenset(value._labelnames))
    return found


def _rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            rules.extend(group["rules"])
    return rules


def _label_values(label: str) -> list[str]:
    """The backticked values of a label's row in the catalogue's label table."""
    for line in CATALOGUE.read_text().splitlines():
        if line.startswith(f"| `{label}` |"):
            return re.findall(r"`([a-z_]+)`", line.split("|")[2])
    raise AssertionError(f"no row for label {label} in {CATALOGUE}")


def test_every_exported_faceval_metric_is_catalogued_with_its_type_and_labels() -> None:
    catalogue = load_catalogue()
    exported = _exported()
    assert exported, "shared/metrics.py declares no metric"
    for name, (kind, labels) in exported.items():
        assert name in catalogue, f"{name} is exported but missing from docs/metrics.md"
        assert catalogue[name].type == kind, f"{name}: documented as {catalogue[name].type}"
        assert catalogue[name].labels == labels, f"{name}: documented labels differ"


def test_the_catalogue_lists_no_faceval_metric_that_is_not_exported() -> None:
    documented = {n for n in load_catalogue() if n.startswith("faceval_")}
    assert documented == set(_exported())


def test_labels_are_bounded_never_a_user_or_transaction_id() -> None:
    unbounded = {"user_id", "user", "transaction_id", "transaction", "process_guid", "url"}
    for name, (_, labels) in _exported().items():
        assert not labels & unbounded, f"{name} has an unbounded label"


def test_documented_label_values_match_the_code() -> None:
    assert _label_values("stage") == list(STAGES)
    assert _label_values("reason") == [s.reason for s in codes.SUMMARIES]
    assert _label_values("status") == [str(s) for s in codes.SummaryStatus]


def test_documented_buckets_are_the_histograms_buckets_from_1ms_to_60s() -> None:
    assert metrics.LATENCY_BUCKETS[0] == 0.001
    assert metrics.LATENCY_BUCKETS[-1] == 60.0
    line = next(ln for ln in CATALOGUE.read_text().splitlines() if "Latency buckets" in ln)
    paragraph = CATALOGUE.read_text().split(line, 1)[1].split("\n- ")[0]
    documented = []
    for value, unit in re.findall(r"(\d+(?:\.\d+)?) (ms|s)\b", line + paragraph):
        documented.append(float(value) / (1000 if unit == "ms" else 1))
    assert documented == list(metrics.LATENCY_BUCKETS)


def test_recording_rules_and_their_catalogue_entries_agree() -> None:
    recorded = {r["record"] for r in _rules() if "record" in r}
    documented = {n for n, e in load_catalogue().items() if e.type == "recording"}
    assert recorded == documented


def test_rules_read_only_catalogued_series() -> None:
    allowed = queryable_names(load_catalogue())
    for rule in _rules():
        used = metric_names(rule["expr"])
        assert used, f"{rule}: no series found in its expression"
        assert used <= allowed, f"{rule.get('record') or rule.get('alert')}: {used - allowed}"


def test_stage_patterns_in_the_rules_name_every_stage() -> None:
    text = "\n".join(path.read_text() for path in RULE_FILES)
    groups = re.findall(r"\((face_detector(?:\|\w+)+)\)", text)
    assert groups, "the rules map no queue to a stage"
    for group in groups:
        assert group.split("|") == list(STAGES)
