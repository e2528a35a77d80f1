"""The data-quality table at the top of the drift report's HTML (escaped; every summary column shown)."""

from __future__ import annotations

import html
import re

from ml_tasks.monitoring.quality import scan_current
from ml_tasks.monitoring.report_html import quality_section, with_quality
from tests.unit.monitoring._frames import current_batches, frame, reference


def _cells(section: str) -> list[list[str]]:
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", section, flags=re.S)
    return [
        [html.unescape(c.strip()) for c in re.findall(r"<t[dh][^>]*>(.*?)</t[dh]>", r, re.S)] for r in rows
    ]


def test_the_table_holds_the_scan_of_every_row() -> None:
    _, stats = reference()
    current = frame(1_500, 7, new_payment=True)
    scan = scan_current(current_batches(current), current.num_rows, stats, sample_rows=1_000, seed=3)
    section = quality_section(scan.summary())
    header, *rows = _cells(section)
    assert header[:4] == ["column", "kind", "rows", "null rate"] and len(header) == 16
    by_column = {r[0]: dict(zip(header, r, strict=True)) for r in rows}
    assert set(by_column) == {"payment_type", "area", "fare", "miles", "score"}
    fare = scan.quality["fare"]
    assert (
        by_column["fare"]["rows"] == "1500" and by_column["fare"]["null rate"] == f"{fare['null_rate']:.4g}"
    )
    assert by_column["fare"]["mean"] == f"{fare['mean']:.4g}" and by_column["fare"]["new categories"] == ""
    assert by_column["payment_type"]["new categories"] == "1"  # Mobile is not in the reference
    assert "1500 current rows" in section and "a sample of 1000" in section


def test_names_are_escaped_and_the_section_opens_the_body() -> None:
    summary = {
        "rows": 2,
        "sample_rows": 2,
        "columns": {"<script>x</script>": {"kind": "numeric", "count": 2}},
    }
    page = with_quality("<html><head></head><body><div id='root'></div></body></html>", summary)
    assert "<script>x" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert page.index('id="flywheel-data-quality"') < page.index("id='root'")
    assert page.startswith("<html><head></head><body><section")
