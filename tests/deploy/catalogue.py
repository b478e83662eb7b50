"""What the deployment tests share: the metrics catalogue, PromQL metric names, and tools."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CATALOGUE = REPO / "docs" / "metrics.md"
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROMETHEUS_DIR / "rules").glob("*.yml"))
GRAFANA_DIR = REPO / "deploy" / "grafana"
K8S_DIR = REPO / "deploy" / "k8s"
OPERATIONS = REPO / "docs" / "operations.md"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

_ROW = re.compile(
    r"^\|\s*`(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)`\s*\|\s*(?P<type>[a-z]+)\s*\|(?P<labels>[^|]*)\|"
)
#: Words of PromQL that look like metric names: keywords, not series.
_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
     "unless", "offset", "inf", "nan", "start", "end"}
)  # fmt: skip
_NAME = re.compile(r"(?<![\w.:])[A-Za-z_:][A-Za-z0-9_:]*")


@dataclass(frozen=True)
class Entry:
    name: str
    type: str
    labels: frozenset[str]


def load_catalogue(path: Path = CATALOGUE) -> dict[str, Entry]:
    """Every metric row of docs/metrics.md's tables: `| `name` | type | `l1`, `l2` | ...`."""
    entries: dict[str, Entry] = {}
    for line in path.read_text().splitlines():
        match = _ROW.match(line)
        if match is None or match["type"] not in {
            "counter", "gauge", "histogram", "summary", "recording"
        }:  # fmt: skip
            continue
        labels = frozenset(re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", match["labels"]))
        name = match["name"]
        assert name not in entries, f"{name} is catalogued twice"
        entries[name] = Entry(name, match["type"], labels)
    return entries


def queryable_names(catalogue: dict[str, Entry]) -> set[str]:
    """Series names a query may use: each metric, and a histogram's three series."""
    names = set(catalogue)
    for entry in catalogue.values():
        if entry.type == "histogram":
            names.update(entry.name + suffix for suffix in HISTOGRAM_SUFFIXES)
    return names


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression reads (Grafana variables allowed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"\$\{?[A-Za-z_]\w*(?::\w+)?\}?", "", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names: set[str] = set()
    for match in _NAME.finditer(text):
        name = match.group(0)
        if text[match.end() :].lstrip().startswith("("):
            continue  # a function or an aggregation
        if name.lower() in _PROMQL_WORDS:
            continue
        names.add(name)
    return names


def grafana_to_promql(expr: str) -> str:
    """A Grafana query as plain PromQL: its variables replaced by representative values."""
    replacements = {
        "$__rate_interval": "1m",
        "$__interval": "1m",
        "$__range": "1h",
    }
    for variable, value in replacements.items():
        expr = expr.replace(variable, value)
    return re.sub(r"\$\{?[A-Za-z_]\w*(?::\w+)?\}?", ".*", expr)


def tool(name: str, *, installed_by_ci: bool = True) -> str:
    """A command-line tool's path; skipped where it is genuinely missing.

    promtool and prometheus are installed by scripts/ensure-tools.sh (`make test`), so CI
    fails without them; kubectl comes with the machine image and no registry here has a
    recent one, so it is only ever skipped.
    """
    path = shutil.which(name)
    if path is None:
        if installed_by_ci and os.environ.get("CI"):
            pytest.fail(f"{name} is missing in CI: scripts/ensure-tools.sh installs it")
        pytest.skip(
            f"{name} is not installed (scripts/ensure-tools.sh installs promtool and "
            "prometheus as root; kubectl with kustomize comes with the machine image)"
        )
    return path


def heading_anchors(markdown: Path) -> set[str]:
    """GitHub's anchors for a Markdown file's headings."""
    anchors: set[str] = set()
    for line in markdown.read_text().splitlines():
        match = re.match(r"^#{1,6}\s+(.*)$", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors
