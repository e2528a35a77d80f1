"""Validation reports: the GX result as JSON, GX's data docs page for it, and a readable index page.

One self-contained ``data_docs.html`` per day from GX's own renderer (a full GX site carries 4.1 MB of
assets). GX result and data docs are volatile (run time, ids); accounting.json and index.html are not.
"""

from __future__ import annotations

import html
import json
from typing import TYPE_CHECKING, Any

from ml_tasks.validation.rules import RESULT_FORMAT, ROW_ID

if TYPE_CHECKING:  # a GX run's result; this module imports no great_expectations (empty days need none)
    from great_expectations.core import ExpectationSuiteValidationResult

# Row ids kept per expectation in the report files (the quarantine partition holds every row).
MAX_LISTED_ROWS = 1000
_INDEX_LISTS = ("unexpected_index_list", "partial_unexpected_index_list")
_VALUE_LISTS = ("unexpected_list", "partial_unexpected_list")


def trim_result(result: ExpectationSuiteValidationResult, limit: int = MAX_LISTED_ROWS) -> None:
    """Cut the per-expectation row-id and value lists to ``limit`` (partial lists to GX's partial count).

    In place: the full lists were already used to pick the rows, and serialising 1M ids per
    expectation would cost seconds and megabytes per report. A trimmed list is flagged with
    ``flywheel_listed_rows`` (how many are listed) next to GX's own ``unexpected_count``.
    """
    partial = int(RESULT_FORMAT["partial_unexpected_count"])
    for res in result.results:
        body = res.result
        trimmed = False
        for key in _INDEX_LISTS:
            cap = limit if key.startswith("unexpected") else partial
            entries = body.get(key)
            if not isinstance(entries, list):
                continue
            # new dicts: GX shares one dict between the full and the partial list
            cut = []
            for entry in entries:
                ids = entry.get(ROW_ID) if isinstance(entry, dict) else None
                if isinstance(ids, list) and len(ids) > cap:
                    entry = {**entry, ROW_ID: ids[:cap]}
                    trimmed = True
                cut.append(entry)
            body[key] = cut
        for key in _VALUE_LISTS:
            cap = limit if key.startswith("unexpected") else partial
            values = body.get(key)
            if isinstance(values, list) and len(values) > cap:
                body[key] = values[:cap]
                trimmed = True
        if trimmed:
            body["flywheel_listed_rows"] = limit


def json_bytes(payload: Any) -> bytes:
    """A report file's bytes: indented JSON with sorted keys and a final newline (deterministic)."""
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode()


def gx_result_json(result: ExpectationSuiteValidationResult) -> bytes:
    """GX's JSON rendering of the suite result (trim it first)."""
    return json_bytes(result.to_json_dict())  # type: ignore[no-untyped-call]  # GX leaves it unannotated


def data_docs_html(result: ExpectationSuiteValidationResult) -> bytes:
    """GX's data docs validation page for ``result`` (trim it first)."""
    from great_expectations.render.renderer.page_renderer import ValidationResultsPageRenderer
    from great_expectations.render.view.view import DefaultJinjaPageView

    document = ValidationResultsPageRenderer().render(result)
    page: str = DefaultJinjaPageView().render(document)  # type: ignore[no-untyped-call]
    return page.encode()


def _table(rows: list[tuple[Any, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def index_html(accounting: dict[str, Any]) -> bytes:
    """One readable page per partition: verdict, row accounting, every rule (GX or not), links."""
    esc = html.escape
    verdict = str(accounting["verdict"])
    failures = "".join(f"<li>{esc(str(f['message']))}</li>" for f in accounting.get("failures", []))
    counts = _table(
        [
            (k, accounting.get(k))
            for k in ("rows_in", "accepted", "quarantined", "reject_rate", "max_reject_rate")
        ],
        ("", "value"),
    )
    row_rules = _table(
        [
            (r["code"], r["engine"], r["expectation"], r["unexpected_count"], r["description"])
            for r in accounting.get("row_rules", [])
        ],
        ("reject code", "engine", "expectation", "rows", "rule"),
    )
    batch_rules = _table(
        [
            (r["code"], r["engine"], r["status"], r.get("detail", ""))
            for r in accounting.get("batch_rules", [])
        ],
        ("batch rule", "engine", "status", "detail"),
    )
    links = "".join(
        f'<li><a href="{esc(name)}">{esc(name)}</a></li>' for name in accounting.get("report_files", [])
    )
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Validation {esc(str(accounting["partition"]))}: {esc(verdict)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}
.passed{{color:#060}}.failed{{color:#b00}}</style>
</head><body>
<h1>trips dt={esc(str(accounting["partition"]))}: <span class="{esc(verdict)}">{esc(verdict)}</span></h1>
<ul>{failures}</ul>
<h2>Row accounting</h2>{counts}
<h2>Batch rules</h2>{batch_rules}
<h2>Row rules (reject codes, in reason order)</h2>{row_rules}
<h2>Files</h2><ul>{links}</ul>
</body></html>
"""
    return page.encode()


def chunk_day_docs_html(day: str, payload: dict[str, Any]) -> bytes:
    """The day's page when GX validated it within a multi-day chunk or in slices: its counts, GX's docs.

    GX's own data docs page (``ValidationResultsPageRenderer``, ~0.2 s each) is rendered once per chunk.
    """
    esc = html.escape
    chunk = payload["flywheel_chunk"]
    rows = [
        (
            r["expectation_config"]["meta"].get("reject_code")
            or r["expectation_config"]["meta"].get("batch_code"),
            r["expectation_config"]["type"],
            "passed" if r["success"] else "failed",
            r["result"].get("unexpected_count", r["result"].get("observed_value")),
        )
        for r in payload["results"]
    ]
    table = _table(rows, ("code", "expectation", "status", "rows"))
    if chunk["data_docs_uri"] is None:  # no rows: nothing for GX to run on
        how = f"<p>No GX run: {esc(chunk['note'])}.</p>"
    elif "slices" in chunk:  # one big day, GX run per slice of its rows
        links = "".join(
            f'<li>rows {s["rows"][0]}..{s["rows"][1] - 1}: <a href="{esc(s["data_docs_uri"])}">'
            f"{esc(s['data_docs_uri'])}</a></li>"
            for s in chunk["slices"]
        )
        how = (
            f"<p>Validated by great_expectations in {len(chunk['slices'])} runs over slices of this day's"
            f" rows; the counts below are the whole day's. GX's data docs per slice (its row ids are"
            f" positions in the slice):</p><ul>{links}</ul>"
        )
    else:
        first, last = esc(chunk["days"][0]), esc(chunk["days"][1])
        how = f"""<p>Validated by great_expectations in one run over {chunk["n_days"]} days ({first} ..
{last}); the counts below are this day's.
GX's data docs for that run: <a href="{esc(chunk["data_docs_uri"])}">{esc(chunk["data_docs_uri"])}</a>
(its row ids are positions in the run, this day starts at {chunk["row_offset"]}).</p>"""
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>GX result trips dt={esc(day)}</title></head><body>
<h1>trips dt={esc(day)}: GX expectations {"passed" if payload["success"] else "failed"}</h1>
{how}
{table}
</body></html>
"""
    return page.encode()
