"""Split a judged day into accepted and quarantined rows, account for every row, write the day's report.

Each rejected row carries its reject codes (rule order, ``;``-separated) in ``reject_reason``; the
accounting (``accounting.json``) records rows in = accepted + quarantined, per-reason counts, every
rule's outcome and the verdict. The accepted partition is written only when the day passes.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from ml_tasks.contract import (
    ACCEPTED,
    ACCOUNTING_FILE,
    DATA_DOCS_FILE,
    GX_RESULT_FILE,
    INDEX_FILE,
    QUARANTINE,
    VALIDATION_REPORTS,
)
from ml_tasks.schema import CURATED_SCHEMA, QUARANTINE_SCHEMA
from ml_tasks.storage import DataRoot, Manifest
from ml_tasks.validation.judge import DayJudgement, StagedDay
from ml_tasks.validation.layout import VERDICT_FAILED, VERDICT_PASSED, partition
from ml_tasks.validation.reports import index_html, json_bytes
from ml_tasks.validation.rules import (
    EMPTY_PARTITION,
    PARSEABLE_COLUMNS,
    REJECT_RATE_EXCEEDED,
    ROW_CODES,
    ROW_RULES,
    SCHEMA_MISMATCH,
    UNPARSEABLE,
    RuleConfig,
)

log = logging.getLogger(__name__)

REASON_SEPARATOR = ";"


def _concat_ws(columns: list[pa.Array | pa.ChunkedArray], separator: str) -> pa.Array:
    """Row-wise join of string columns skipping nulls; null when every value of the row is null.

    DuckDB's concat_ws instead of pyarrow's binary_join_element_wise(null_handling="skip"), which in
    pyarrow 25.0.1 silently DROPS the rows whose values are all null (the result is shorter).
    """
    import duckdb  # only when some row is rejected: the import costs ~0.1 s of the step's start-up

    n = len(columns[0])
    names = [f"c{i}" for i in range(len(columns))]
    table = pa.table({"i": pa.array(np.arange(n, dtype=np.int64)), **dict(zip(names, columns, strict=True))})
    sql = f"SELECT NULLIF(concat_ws('{separator}', {', '.join(names)}), '') AS joined FROM t ORDER BY i"
    con = duckdb.connect()
    try:
        con.register("t", table)
        joined = con.execute(sql).to_arrow_table()["joined"].combine_chunks()
    finally:
        con.close()
    if len(joined) != n:  # pragma: no cover - an invariant
        raise AssertionError(f"joining reject codes changed the row count: {n} -> {len(joined)}")
    return joined.cast(pa.string())


def unparseable_reasons(parse_errors: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``unparseable:<col>,<col>`` from ``_parse_errors`` ("col=value;col=value"), columns in schema order.

    Null where ``_parse_errors`` is null; a text naming no known column gets the bare code.
    """
    none = pa.scalar(None, pa.string())
    named = [
        pc.if_else(pc.match_substring_regex(parse_errors, f"(^|;){col}="), pa.scalar(col), none)
        for col in PARSEABLE_COLUMNS
    ]
    cols = _concat_ws(named, ",")
    with_cols = pc.if_else(
        pc.is_null(cols), pa.scalar(UNPARSEABLE), pc.binary_join_element_wise(UNPARSEABLE, cols, ":")
    )
    result = pc.if_else(pc.is_null(parse_errors), none, with_cols)
    return result.combine_chunks() if isinstance(result, pa.ChunkedArray) else result


def reject_reasons(
    table: pa.Table, row_ids: dict[str, npt.NDArray[np.int64]]
) -> tuple[npt.NDArray[np.bool_], pa.Array]:
    """The rejected-row mask and the rejected rows' ``reject_reason`` (codes in rule order)."""
    rejected = np.zeros(table.num_rows, dtype=bool)
    for ids in row_ids.values():
        rejected[ids] = True
    subset = table.filter(pa.array(rejected))
    none = pa.scalar(None, pa.string())
    pieces = []
    for rule in ROW_RULES:
        ids = row_ids.get(rule.code, np.empty(0, dtype=np.int64))
        if len(ids) == 0:
            continue
        mask = np.zeros(table.num_rows, dtype=bool)
        mask[ids] = True
        hit = pa.array(mask[rejected])
        text = (
            unparseable_reasons(subset["_parse_errors"]) if rule.code == UNPARSEABLE else pa.scalar(rule.code)
        )
        pieces.append(pc.if_else(hit, text, none))
    if not pieces:
        return rejected, pa.array([], pa.string())
    return rejected, _concat_ws(pieces, REASON_SEPARATOR)


def _remove_partition(root: DataRoot, path: str) -> None:
    if root.exists(path):
        log.warning("removing stale partition %s (this run did not produce it)", root.uri(path))
        root.fs.delete_dir(path)


def _write_report(
    root: DataRoot, day: dt.date, files: dict[str, bytes], volatile: set[str]
) -> dict[str, str]:
    """Write the report files as one atomic partition; return name -> URI."""
    target = partition(root, VALIDATION_REPORTS, day)
    uris: dict[str, str] = {}
    with root.write_partition(target) as writer:
        outputs = []
        for name, payload in files.items():
            with root.fs.open_output_stream(f"{writer.staging}/{name}") as out:
                out.write(payload)
            uri = root.uri(f"{target}/{name}")
            uris[name] = uri
            entry: dict[str, Any] = {"uri": uri, "bytes": len(payload)}
            if name in volatile:
                entry["volatile"] = "holds GX validation time and run ids: differs between runs"
                entry.pop("bytes")
            else:
                entry["sha256"] = hashlib.sha256(payload).hexdigest()
            outputs.append(entry)
        writer.manifest = Manifest(
            dataset=f"{VALIDATION_REPORTS[0]}/{VALIDATION_REPORTS[1]}",
            partition=day.isoformat(),
            step="validate",
            outputs=outputs,
        )
    return uris


@dataclass(frozen=True)
class _Split:
    """How one day's rows divide: the rejected-row mask, their reasons (in row order) and the counts."""

    rejected: npt.NDArray[np.bool_]
    reasons: pa.Array
    rows_in: int
    accepted: int
    quarantined: int


def _write_split(
    root: DataRoot,
    staged: StagedDay,
    split: _Split,
    config: RuleConfig,
    by_reason: dict[str, int],
    passing: bool,
) -> dict[str, Any]:
    """Stream the staged rows once, batch by batch, into quarantine and (when ``passing``) accepted.

    Memory is one batch, not the day (``docs/ingest.md``). Quarantine is written whatever the
    verdict; accepted only for a passing day. Returns the ``outputs`` entry of the accounting.
    """
    day, record, n, a, q = staged.day, staged.record, split.rows_in, split.accepted, split.quarantined
    params = {"max_reject_rate": config.max_reject_rate}
    q_path, a_path = partition(root, QUARANTINE, day), partition(root, ACCEPTED, day)
    with ExitStack() as stack:
        quarantine = stack.enter_context(root.write_partition(q_path))
        accepted = stack.enter_context(root.write_partition(a_path)) if passing else None
        offset = taken = 0
        for batch in root.iter_batches(staged.path):
            rows = pa.Table.from_batches([batch])
            mask = split.rejected[offset : offset + rows.num_rows]
            k = int(mask.sum())
            if k:
                picked = rows.filter(pa.array(mask))
                reasons = split.reasons.slice(taken, k)
                quarantine.write(picked.append_column("reject_reason", reasons), schema=QUARANTINE_SCHEMA)
            if accepted is not None and k < rows.num_rows:
                accepted.write(rows.filter(pa.array(~mask)) if k else rows, schema=CURATED_SCHEMA)
            offset += rows.num_rows
            taken += k
        quarantine.write_empty(QUARANTINE_SCHEMA)
        if offset != n or quarantine.rows != q:  # pragma: no cover - an invariant, not an input
            raise AssertionError(
                f"dt={day}: split {offset} rows into {quarantine.rows} quarantined, expected {q}"
            )
        quarantine.manifest = Manifest(
            dataset=f"{QUARANTINE[0]}/{QUARANTINE[1]}", partition=day.isoformat(), step="validate",
            inputs=[record], outputs=quarantine.outputs(),
            row_counts={"rows": q, "rows_in": n, "accepted": a,
                        **{f"reason.{code}": count for code, count in by_reason.items()}},
            params=params,
        )  # fmt: skip
        outputs: dict[str, Any] = {
            "quarantine": {"uri": root.uri(q_path), "files": quarantine.manifest.outputs}
        }
        if accepted is not None:
            accepted.write_empty(CURATED_SCHEMA)
            if accepted.rows != a:  # pragma: no cover - an invariant, not an input
                raise AssertionError(f"dt={day}: wrote {accepted.rows} accepted rows, expected {a}")
            accepted.manifest = Manifest(
                dataset=f"{ACCEPTED[0]}/{ACCEPTED[1]}", partition=day.isoformat(), step="validate",
                inputs=[record], outputs=accepted.outputs(),
                row_counts={"rows": a, "rows_in": n, "quarantined": q}, params=params,
            )  # fmt: skip
            outputs["accepted"] = {"uri": root.uri(a_path), "files": accepted.manifest.outputs}
    return outputs


def write_day(
    root: DataRoot, staged: StagedDay, config: RuleConfig, judged: DayJudgement | None
) -> dict[str, Any]:
    """Split one judged day into quarantine/accepted and write its reports; return its accounting.

    ``judged`` is None only for a day with a schema mismatch (no row was judged).
    """
    day, staging_record, table = staged.day, staged.record, staged.table
    n = staged.rows
    where = f"staging/trips/dt={day.isoformat()}"
    report_names = [INDEX_FILE, ACCOUNTING_FILE]
    accounting: dict[str, Any] = {
        "dataset": "trips",
        "partition": day.isoformat(),
        "rows_in": n,
        "max_reject_rate": config.max_reject_rate,
        "allow_empty": config.allow_empty,
        "thresholds": {"max_fare": config.max_fare, "max_trip_miles": config.max_trip_miles,
                       "max_trip_seconds": config.max_trip_seconds},
        "inputs": {"staging": staging_record},
    }  # fmt: skip
    failures: list[dict[str, Any]] = []

    problems = staged.problems
    batch_rules: list[dict[str, Any]] = [
        {
            "code": SCHEMA_MISMATCH,
            "engine": "arrow schema",
            "status": "failed" if problems else "passed",
            "detail": "; ".join(problems) or "columns, order and types equal CURATED_SCHEMA",
        }
    ]
    if problems or judged is None:
        failures.append(
            {"dt": day.isoformat(), "rule": SCHEMA_MISMATCH,
             "message": f"{where}: {SCHEMA_MISMATCH}: {'; '.join(problems)} (re-run transform for this day)"}
        )  # fmt: skip
        # rows cannot be judged one by one when the columns are wrong: no split at all
        _remove_partition(root, partition(root, ACCEPTED, day))
        _remove_partition(root, partition(root, QUARANTINE, day))
        accounting.update({"accepted": None, "quarantined": None, "reject_rate": None, "by_reason": {}})
        return _finish(root, day, accounting, batch_rules, failures, {}, report_names)

    outcome = judged
    rejected, reasons = reject_reasons(table, outcome.row_ids)
    q = int(rejected.sum())
    a = n - q
    if n != table.num_rows or len(reasons) != q:  # pragma: no cover - an invariant, not an input
        raise AssertionError(f"{where}: row accounting broken: {n} rows in != {a} accepted + {q} quarantined")
    by_reason = {code: len(outcome.row_ids.get(code, ())) for code in ROW_CODES}
    rate = q / n if n else 0.0
    accounting.update(
        {
            "accepted": a,
            "quarantined": q,
            "reject_rate": round(rate, 6),
            "by_reason": by_reason,
            "rows_with_several_reasons": int(
                pc.sum(pc.greater(pc.count_substring(reasons, REASON_SEPARATOR), 0)).as_py() or 0
            ),
        }
    )
    empty_failed = not outcome.row_count_ok
    batch_rules.append(
        {"code": EMPTY_PARTITION, "engine": "great_expectations",
         "status": "failed" if empty_failed else "passed",
         "detail": f"{n} rows, allow_empty={config.allow_empty}"}
    )  # fmt: skip
    if empty_failed:
        failures.append(
            {"dt": day.isoformat(), "rule": EMPTY_PARTITION, "rows": n,
             "message": f"{where}: {EMPTY_PARTITION}: the partition has 0 rows and allow_empty is off"
                        " (check the extract for this day, or pass --allow-empty)"}
        )  # fmt: skip
    rate_failed = rate > config.max_reject_rate
    batch_rules.append(
        {"code": REJECT_RATE_EXCEEDED, "engine": "accounting (union of row rules)",
         "status": "failed" if rate_failed else "passed",
         "detail": f"{q} of {n} rows rejected ({rate:.2%}), max_reject_rate {config.max_reject_rate:.2%}"}
    )  # fmt: skip
    if rate_failed:
        top = sorted(((c, k) for c, k in by_reason.items() if k), key=lambda x: (-x[1], x[0]))[:5]
        failures.append(
            {"dt": day.isoformat(), "rule": REJECT_RATE_EXCEEDED, "rows": n, "quarantined": q,
             "reject_rate": round(rate, 6), "max_reject_rate": config.max_reject_rate,
             "message": f"{where}: {REJECT_RATE_EXCEEDED}: {q} of {n} rows rejected ({rate:.2%}) >"
                        f" max_reject_rate {config.max_reject_rate:.2%}; top reasons: "
                        + ", ".join(f"{c}={k}" for c, k in top)}
        )  # fmt: skip

    split = _Split(rejected, reasons, n, a, q)
    outputs = _write_split(root, staged, split, config, by_reason, passing=not failures)
    if failures:
        _remove_partition(root, partition(root, ACCEPTED, day))
    accounting["outputs"] = outputs
    accounting["row_rules"] = [
        {
            "code": rule.code,
            "engine": "great_expectations",
            "expectation": rule.expectation_type,
            "columns": list(rule.columns),
            "unexpected_count": outcome.unexpected_counts.get(rule.code, 0),
            "description": rule.description,
        }
        for rule in ROW_RULES
    ]
    accounting["gx_success"] = bool(outcome.success)
    return _finish(root, day, accounting, batch_rules, failures, outcome.report_files, report_names)


def _finish(
    root: DataRoot,
    day: dt.date,
    accounting: dict[str, Any],
    batch_rules: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    gx_files: dict[str, bytes],
    report_names: list[str],
) -> dict[str, Any]:
    """Complete the accounting (verdict, report file names) and write the report partition."""
    files: dict[str, bytes] = dict(gx_files)
    accounting["batch_rules"] = batch_rules
    accounting["failures"] = failures
    accounting["verdict"] = VERDICT_FAILED if failures else VERDICT_PASSED
    accounting["report_files"] = sorted([*report_names, *files])
    files[ACCOUNTING_FILE] = json_bytes(accounting)
    files[INDEX_FILE] = index_html(accounting)
    uris = _write_report(root, day, files, volatile={GX_RESULT_FILE, DATA_DOCS_FILE})
    accounting["report_uris"] = uris
    return accounting
