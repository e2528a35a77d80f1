"""The whole real TFX sample (15,002 trips over 1,461 days) through the real CLI: every row accounted for.

extract -> transform -> validate -> publish as subprocesses, as a DAG runs them (``run_cli_process``: one
of the few tests that pin the process contract, the XCom file included); the reject reasons are checked
against counts computed independently from the raw CSV with DuckDB.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import duckdb
import pyarrow.dataset as ds

from tests.conftest import run_cli_process

START, END = "2013-01-01", "2017-01-01"
ENV = {"FLYWHEEL_CODE_VERSION": "test"}  # skips a git call per partition manifest


def raw_counts(csv: Path) -> dict[str, int]:
    """Counts of the rules' conditions, straight from the CSV (numbers typed by DuckDB, not by us)."""
    row = duckdb.sql(
        f"""
        SELECT count(*),
               count(*) FILTER (WHERE fare <= 0 OR fare > 1000),
               count(*) FILTER (WHERE trip_seconds = 0 AND trip_miles > 0),
               count(*) FILTER (WHERE trip_seconds IS NULL),
               count(*) FILTER (WHERE trip_miles > 1000 OR trip_miles < 0)
        FROM read_csv('{csv}', header = true)
        """
    ).fetchone()
    assert row is not None
    keys = ("rows", "fare_out_of_range", "zero_seconds_positive_miles", "missing_trip_seconds",
            "trip_miles_out_of_range")  # fmt: skip
    return dict(zip(keys, (int(v) for v in row), strict=True))


def test_tfx_sample_end_to_end_accounts_for_every_row(chicago_samples: Path, data_root: Path) -> None:
    csv = chicago_samples / "tfx_simple_data.csv"
    expected = raw_counts(csv)
    assert expected["rows"] == 15_002
    interval = ("--start", START, "--end", END)
    extracted = run_cli_process(
        "extract", "--source", "file", "--mapping", "tfx", "--uri", str(csv), *interval, env=ENV
    )
    assert sum(p["rows"] for p in extracted["partitions"]) == 15_002
    assert len(extracted["partitions"]) == 1461
    run_cli_process("transform", *interval, env=ENV)
    validated = run_cli_process("validate", *interval, "--allow-empty", "--max-reject-rate", "1", env=ENV)
    assert validated["verdict"] == "passed"
    xcom = data_root.parent / "airflow" / "xcom" / "return.json"  # as a KubernetesPodOperator pod writes it
    published = run_cli_process("publish", *interval, env={**ENV, "FLYWHEEL_XCOM_FILE": str(xcom)})
    assert json.loads(xcom.read_text()) == published  # the same summary as the one stdout line

    totals = published["totals"]
    assert totals["raw"] == 15_002
    assert totals["curated"] + totals["quarantined"] == 15_002

    # the partitions themselves, read back (not the summaries)
    curated = ds.dataset(data_root / "curated" / "trips", format="parquet", partitioning="hive")
    quarantine = ds.dataset(data_root / "quarantine" / "trips", format="parquet", partitioning="hive")
    n_curated, n_quarantined = curated.count_rows(), quarantine.count_rows()
    assert n_curated + n_quarantined == 15_002
    assert (n_curated, n_quarantined) == (totals["curated"], totals["quarantined"])

    reasons: Counter[str] = Counter()
    for reason in quarantine.to_table(columns=["reject_reason"])["reject_reason"].to_pylist():
        assert reason, "every quarantined row has a reason"
        reasons.update(code.split(":")[0] for code in reason.split(";"))
    by_reason: Counter[str] = Counter()
    for part in validated["partitions"]:
        by_reason.update(part["by_reason"])
    assert reasons == by_reason
    for code in ("fare_out_of_range", "zero_seconds_positive_miles", "missing_trip_seconds",
                 "trip_miles_out_of_range"):  # fmt: skip
        assert reasons[code] == expected[code], code
    print(
        f"\nTFX sample: {totals['raw']} rows -> {n_curated} curated + {n_quarantined} quarantined;"
        f" reasons {dict(reasons.most_common())}; validate {validated['seconds']} s"
        f" (GX {validated['gx_seconds']} s)"
    )
