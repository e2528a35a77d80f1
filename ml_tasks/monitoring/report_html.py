"""The data-quality table first in ``drift_report.html``: every current row against the training statistics.

The numbers are the streamed scan's (:mod:`ml_tasks.monitoring.quality`, also in ``drift_report.json``);
Evidently's own per-column summary of the sample is opt-in (``monitor_evidently_summary``). See
``docs/monitoring.md``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: (header, key of a column's data-quality summary), in the table's order
COLUMNS = (
    ("kind", "kind"),
    ("rows", "count"),
    ("null rate", "null_rate"),
    ("reference null rate", "reference_null_rate"),
    ("min", "min"),
    ("max", "max"),
    ("mean", "mean"),
    ("reference mean", "reference_mean"),
    ("std", "std"),
    ("reference std", "reference_std"),
    ("out of reference range", "out_of_range_share"),
    ("distinct", "distinct"),
    ("reference distinct", "reference_distinct"),
    ("new categories", "new_categories"),
    ("new category share", "new_category_share"),
)
_STYLE = "font-family:sans-serif;font-size:13px;margin:16px;overflow-x:auto"


def quality_section(summary: Mapping[str, Any]) -> str:
    """An HTML ``<section>`` with one row per column of ``summary`` (``CurrentScan.summary()``), escaped."""
    import pandas as pd

    columns: Mapping[str, Mapping[str, Any]] = summary["columns"]
    frame = pd.DataFrame(
        [{"column": name, **{head: q.get(key) for head, key in COLUMNS}} for name, q in columns.items()],
        columns=["column", *(head for head, _ in COLUMNS)],
    )
    table = frame.to_html(index=False, na_rep="", float_format=lambda v: f"{v:.4g}", border=1, escape=True)
    return (
        f'<section id="flywheel-data-quality" style="{_STYLE}"><h2>Data quality</h2>'
        f"<p>{int(summary['rows'])} current rows (every row; Evidently's drift tests below use a sample of"
        f" {int(summary['sample_rows'])}) against the statistics of every training row.</p>{table}</section>"
    )


def with_quality(html: str, summary: Mapping[str, Any]) -> str:
    """``html`` with :func:`quality_section` first in its body."""
    head, body, rest = html.partition("<body>")
    section = quality_section(summary)
    return f"{head}{body}{section}{rest}" if body else f"{section}{html}"
