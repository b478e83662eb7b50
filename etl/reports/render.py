"""report.html: one self-contained page (charts inlined as base64 PNG) from report.json."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1000px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f0f0f0}td:first-child,th:first-child{text-align:left}
.banner{background:#fff3cd;border:1px solid #e0c060;padding:.6em 1em}
.top{background:#e8f1ff;border:1px solid #8ab;padding:.6em 1em}
img{max-width:100%;display:block;margin:.5em 0 1.5em}
"""


def _cell(value: Any) -> str:
    if value is None:
        return "&ndash;"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 1 else f"{value:,.1f}"
    return html.escape(str(value))


def _pct(value: Any) -> str:
    return "&ndash;" if value is None else f"{100 * value:.1f}%"


def table(headers: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    rows = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in body)
    return f"<table><tr>{head}</tr>{rows}</table>"


def _image(path: Path | None, alt: str) -> str:
    if path is None or not path.exists():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _bottlenecks(b: dict[str, Any], charts: dict[str, Path]) -> str:
    top = b["top_bottleneck"]
    parts = ["<h2>1. Bottlenecks per service and image</h2>"]
    if top:
        parts.append(f'<p class="top">Top bottleneck: <b>{html.escape(top["summary"])}</b>.</p>')
    e2e = b["end_to_end_ms"]
    parts.append(
        f"<p>{b['transactions']} transactions; end-to-end p50 {_cell(e2e['p50'])} ms, "
        f"p95 {_cell(e2e['p95'])} ms, p99 {_cell(e2e['p99'])} ms. Shares add the near "
        "and far images, which run side by side, so they can exceed 100%.</p>"
    )
    parts.append(
        table(
            [
                "service",
                "image",
                "runs",
                "exec p50",
                "exec p95",
                "exec p99",
                "queue p50",
                "queue p95",
                "queue p99",
                "exec share",
                "queue share",
                "share",
            ],
            [
                [
                    _cell(s["service"]),
                    _cell(s["image"]),
                    _cell(s["runs"]),
                    *(_cell(s["exec_ms"][p]) for p in ("p50", "p95", "p99")),
                    *(_cell(s["queue_ms"][p]) for p in ("p50", "p95", "p99")),
                    _pct(s["exec_share_of_end_to_end"]),
                    _pct(s["queue_share_of_end_to_end"]),
                    _pct(s["share_of_end_to_end"]),
                ]
                for s in b["stages"]
            ],
        )
    )
    models = [m for m in b["models"] if m["runs"]]
    parts.append("<h3>Models inside the stages (execution ms)</h3>")
    parts.append(
        table(
            ["model", "image", "runs", "p50", "p95", "p99"],
            [
                [
                    _cell(m["model"]),
                    _cell(m["image"]),
                    _cell(m["runs"]),
                    *(_cell(m["exec_ms"][p]) for p in ("p50", "p95", "p99")),
                ]
                for m in models
            ],
        )
    )
    for key in ("stage_percentiles", "stage_shares", "trend_by_hour", "trend_by_day"):
        parts.append(_image(charts.get(key), key))
    return "\n".join(parts)


def _acceptance(a: dict[str, Any], charts: dict[str, Path]) -> str:
    o = a["overall"]
    parts = [
        "<h2>2. Acceptance per client</h2>",
        f"<p>{html.escape(a['definition'])}. Overall: {_pct(o['acceptance_rate'])} "
        f"[{_pct(o['ci95_low'])}, {_pct(o['ci95_high'])}] of "
        f"{o['accepted'] + o['rejected']} decided; {o['errors']} errors.</p>",
    ]
    parts.append(
        table(
            ["client", "transactions", "accepted", "rejected", "errors", "rate", "95% CI"],
            [
                [
                    _cell(c["client"]),
                    _cell(c["transactions"]),
                    _cell(c["accepted"]),
                    _cell(c["rejected"]),
                    _cell(c["errors"]),
                    _pct(c["acceptance_rate"]),
                    f"{_pct(c['ci95_low'])} &ndash; {_pct(c['ci95_high'])}",
                ]
                for c in a["per_client"]
            ],
        )
    )
    parts.append(_image(charts.get("acceptance_by_client"), "acceptance by client"))
    parts.append(_image(charts.get("acceptance_over_time"), "acceptance over time"))
    parts.append("<h3>Rejections by reason and deciding stage</h3>")
    parts.append(
        table(
            ["reason", "code", "stage", "count"],
            [
                [_cell(r["reason"]), _cell(r["code"]), _cell(r["stage"]), _cell(r["count"])]
                for r in a["rejections_by_reason"]
            ],
        )
    )
    parts.append(_image(charts.get("rejections"), "rejections"))
    if a["errors_by_reason"]:
        parts.append("<h3>Errors (not in the rate)</h3>")
        parts.append(
            table(
                ["reason", "stage", "count"],
                [
                    [_cell(r["reason"]), _cell(r["stage"]), _cell(r["count"])]
                    for r in a["errors_by_reason"]
                ],
            )
        )
    return "\n".join(parts)


def _retries(r: dict[str, Any], charts: dict[str, Path]) -> str:
    parts = [
        "<h2>3. Retry patterns</h2>",
        f"<p>{html.escape(r['definition'])}. {r['processes']} processes of "
        f"{r['users']} users; mean attempts to acceptance "
        f"{_cell(r['mean_attempts_to_acceptance'])}.</p>",
    ]
    parts.append(
        table(
            ["outcome", "processes", "mean attempts"],
            [
                [_cell(o["outcome"]), _cell(o["processes"]), _cell(o["mean_attempts"])]
                for o in r["outcomes"]
            ],
        )
    )
    parts.append(_image(charts.get("attempts_distribution"), "attempts distribution"))
    parts.append("<h3>Success probability by attempt number</h3>")
    parts.append(
        table(
            ["attempt", "attempts", "accepted", "success", "95% CI", "eventually accepted"],
            [
                [
                    _cell(a["attempt_number"]),
                    _cell(a["attempts"]),
                    _cell(a["accepted"]),
                    _pct(a["success"]["rate"]),
                    f"{_pct(a['success']['ci95_low'])} &ndash; {_pct(a['success']['ci95_high'])}",
                    _pct(a["eventually_accepted"]["rate"]),
                ]
                for a in r["success_by_attempt_number"]
            ],
        )
    )
    parts.append(_image(charts.get("success_by_attempt"), "success by attempt"))
    parts.append("<h3>Reasons that lead to retries</h3>")
    parts.append(
        table(
            ["reason", "failures", "retried", "retry rate", "next accepted"],
            [
                [
                    _cell(x["reason"]),
                    _cell(x["failures"]),
                    _cell(x["retried"]),
                    _pct(x["retry_rate"]),
                    _pct(x["next_attempt_accepted_rate"]),
                ]
                for x in r["reasons_leading_to_retries"]
            ],
        )
    )
    t = r["time_between_attempts"]
    parts.append("<h3>Time between attempts</h3>")
    parts.append(
        f"<p>{_cell(t.get('n'))} retries: p50 {_cell(_s(t.get('p50_ms')))} s, p95 "
        f"{_cell(_s(t.get('p95_ms')))} s, mean {_cell(_s(t.get('mean_ms')))} s.</p>"
    )
    parts.append(
        table(
            ["after reason", "retries", "p50 s", "p95 s", "mean s"],
            [
                [
                    _cell(x["after_reason"]),
                    _cell(x["n"]),
                    _cell(_s(x["p50_ms"])),
                    _cell(_s(x["p95_ms"])),
                    _cell(_s(x["mean_ms"])),
                ]
                for x in r["time_between_attempts_by_previous_reason"]
            ],
        )
    )
    return "\n".join(parts)


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def render_html(report: dict[str, Any], charts: dict[str, Path]) -> str:
    meta = report["data"]
    banner = ""
    if meta["synthetic_rows"]:
        banner = (
            f'<p class="banner"><b>{meta["synthetic_rows"]} of {meta["rows"]} rows are '
            "SYNTHETIC</b> (generated for scale tests, not real traffic).</p>"
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>FaceVal analytics {html.escape(meta["days"])}
</title><style>{STYLE}</style></head><body>
<h1>FaceVal analytics</h1>
<p>Days {html.escape(meta["days"])} · {meta["rows"]} transactions · {meta["synthetic_rows"]}
synthetic · source {html.escape(meta["source"])} · generated {html.escape(report["generated_at"])}
</p>
{banner}
{_bottlenecks(report["bottlenecks"], charts)}
{_acceptance(report["acceptance"], charts)}
{_retries(report["retries"], charts)}
</body></html>
"""
