"""The validate step: split each staged day into accepted and quarantined rows, write the reports.

Per day D, in this order (reports exist before any failure is raised):

1. read ``staging/trips/dt=D``; batch rule ``schema_mismatch`` on its Arrow schema;
2. run the GX suite; each row rule's unexpected row ids become that row's reject codes. GX runs once
   per chunk of whole days (up to ``max_chunk_rows`` rows, :func:`plan_chunks`), not once per day
   (~0.25 s of fixed cost per run, ~0.2 s more to render its data docs); the chunk's row ids are cut
   back per day. ``outside_partition`` holds per row through a whole-day shift (:func:`.suite.gx_frame`),
   ``duplicate_trip`` reads transform's per-day ``_is_duplicate`` and ``empty_partition`` is judged on
   each day's row count. A one-day chunk keeps GX's own result and data docs in the day's report; a
   multi-day chunk writes them once to ``reports/validation/chunks/<first>_<last>/`` and each day's
   gx_result.json / data_docs.html hold the day's counts and point there;
3. write ``quarantine/trips/dt=D`` (always, possibly empty);
4. write ``staging/trips_accepted/dt=D`` only when the batch passes (a stale one is removed otherwise,
   so nothing downstream can pick up rows of a day that failed);
5. write ``reports/validation/dt=D`` (accounting.json, gx_result.json, data_docs.html, index.html).

After every day is done, batch-level failures of any day raise one :class:`ValidationFailed`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import duckdb
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
    STAGING,
    VALIDATION_REPORTS,
)
from ml_tasks.intervals import Interval
from ml_tasks.schema import CURATED_SCHEMA, QUARANTINE_SCHEMA
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, input_record
from ml_tasks.validation import ValidationFailed
from ml_tasks.validation.layout import VERDICT_FAILED, VERDICT_PASSED, partition
from ml_tasks.validation.reports import (
    MAX_LISTED_ROWS,
    chunk_day_docs_html,
    data_docs_html,
    gx_result_json,
    index_html,
    trim_result,
)
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
from ml_tasks.validation.suite import ROW_ID, GxOutcome, TripSuite

log = logging.getLogger(__name__)

REASON_SEPARATOR = ";"


def schema_problems(found: pa.Schema, expected: pa.Schema = CURATED_SCHEMA) -> list[str]:
    """What differs between ``found`` and ``expected``: missing, unexpected, mistyped, order."""
    have = {f.name: f.type for f in found}
    want = {f.name: f.type for f in expected}
    problems = []
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    mistyped = [
        f"{n}: {have[n]} (expected {t})" for n, t in want.items() if n in have and not have[n].equals(t)
    ]
    if missing:
        problems.append(f"missing columns {missing}")
    if extra:
        problems.append(f"unexpected columns {extra}")
    if mistyped:
        problems.append(f"mistyped columns [{'; '.join(mistyped)}]")
    if not missing and not extra and list(have) != list(want):
        problems.append("column order differs from CURATED_SCHEMA")
    return problems


def _concat_ws(columns: list[pa.Array | pa.ChunkedArray], separator: str) -> pa.Array:
    """Row-wise join of string columns skipping nulls; null when every value of the row is null.

    DuckDB's concat_ws instead of pyarrow's binary_join_element_wise(null_handling="skip"), which in
    pyarrow 25.0.1 silently DROPS the rows whose values are all null (the result is shorter).
    """
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


@dataclass
class DayJudgement:
    """What the GX suite decided about one day's rows (cut out of a chunk run when it held several days)."""

    row_ids: dict[str, npt.NDArray[np.int64]]  # reject code -> failing row positions in the day's table
    unexpected_counts: dict[str, int]
    row_count_ok: bool
    success: bool  # every expectation held for the day (GX's suite success for a single-day run)
    seconds: float  # the day's share of its chunk's GX time
    report_files: dict[str, bytes]  # gx_result.json and data_docs.html


@dataclass
class StagedDay:
    """One staged day partition, read and schema-checked."""

    day: dt.date
    record: dict[str, Any]  # manifest input record of staging/trips/dt=day
    table: pa.Table
    problems: list[str]  # schema_mismatch findings (empty: the day can be judged row by row)


def _read_day(root: DataRoot, day: dt.date) -> StagedDay:
    source = partition(root, STAGING, day)
    staging_record = input_record(root, source)  # refuses a missing or incomplete partition
    table = root.read_partition(source, schema=None)
    if table.num_columns == 0:
        table = CURATED_SCHEMA.empty_table()
    return StagedDay(day, staging_record, table, schema_problems(table.schema))


def _write_day(
    root: DataRoot, staged: StagedDay, config: RuleConfig, judged: DayJudgement | None
) -> dict[str, Any]:
    """Split one judged day into quarantine/accepted and write its reports; return its accounting.

    ``judged`` is None only for a day with a schema mismatch (no row was judged).
    """
    day, staging_record, table = staged.day, staged.record, staged.table
    n = table.num_rows
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
    accepted_rows = table.filter(pa.array(~rejected))
    quarantined_rows = table.filter(pa.array(rejected)).append_column("reject_reason", reasons)
    a, q = accepted_rows.num_rows, quarantined_rows.num_rows
    if n != a + q:  # pragma: no cover - an invariant, not an input
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

    quarantine_path = partition(root, QUARANTINE, day)
    quarantine_outputs = root.write_table(
        quarantine_path,
        quarantined_rows,
        QUARANTINE_SCHEMA,
        Manifest(
            dataset=f"{QUARANTINE[0]}/{QUARANTINE[1]}",
            partition=day.isoformat(),
            step="validate",
            inputs=[staging_record],
            row_counts={
                "rows": q,
                "rows_in": n,
                "accepted": a,
                **{f"reason.{c}": k for c, k in by_reason.items()},
            },
            params={"max_reject_rate": config.max_reject_rate},
        ),
    ).outputs
    outputs: dict[str, Any] = {"quarantine": {"uri": root.uri(quarantine_path), "files": quarantine_outputs}}

    accepted_path = partition(root, ACCEPTED, day)
    if failures:
        _remove_partition(root, accepted_path)
    else:
        accepted = root.write_table(
            accepted_path,
            accepted_rows,
            CURATED_SCHEMA,
            Manifest(
                dataset=f"{ACCEPTED[0]}/{ACCEPTED[1]}",
                partition=day.isoformat(),
                step="validate",
                inputs=[staging_record],
                row_counts={"rows": a, "rows_in": n, "quarantined": q},
                params={"max_reject_rate": config.max_reject_rate},
            ),
        )
        outputs["accepted"] = {"uri": root.uri(accepted_path), "files": accepted.outputs}
    accounting["outputs"] = outputs
    accounting["row_rules"] = [
        {
            "code": rule.code,
            "engine": "great_expectations",
            "expectation": rule.expectation(config).expectation_type,
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
    files[ACCOUNTING_FILE] = _json_bytes(accounting)
    files[INDEX_FILE] = index_html(accounting)
    uris = _write_report(root, day, files, volatile={GX_RESULT_FILE, DATA_DOCS_FILE})
    accounting["report_uris"] = uris
    return accounting


def _json_bytes(payload: dict[str, Any]) -> bytes:
    return (json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode()


DEFAULT_MAX_CHUNK_ROWS = 500_000  # rows per GX run (whole days; a bigger day is a chunk of its own)


def plan_chunks(day_rows: list[tuple[dt.date, int]], max_chunk_rows: int) -> list[list[dt.date]]:
    """Group consecutive days into chunks of at most ``max_chunk_rows`` rows (whole days only).

    A day with more rows than the limit gets a chunk of its own; ``max_chunk_rows <= 0`` means one day
    per chunk (GX once per day, the behaviour before chunking).
    """
    chunks: list[list[dt.date]] = []
    rows = 0
    for day, n in day_rows:
        if chunks and max_chunk_rows > 0 and rows + n <= max_chunk_rows:
            chunks[-1].append(day)
            rows += n
        else:
            chunks.append([day])
            rows = n
    return chunks


def _chunk_report(
    root: DataRoot, days: list[StagedDay], outcome: GxOutcome
) -> tuple[dict[str, str], dict[str, bytes]]:
    """Write the GX result and data docs of a multi-day chunk once; return their URIs and the files.

    Rendering GX's data docs costs ~0.2 s per result whatever its size: once per chunk, not per day.
    Path: ``reports/validation/chunks/<first>_<last>/`` (not a ``dt=`` partition: nothing lists it
    as a day). Row ids in it are positions in the chunk (the days' rows concatenated in date order).
    """
    first, last = days[0].day.isoformat(), days[-1].day.isoformat()
    target = f"{root.dataset_path(*VALIDATION_REPORTS)}/chunks/{first}_{last}"
    trim_result(outcome.result)
    files = {GX_RESULT_FILE: gx_result_json(outcome.result), DATA_DOCS_FILE: data_docs_html(outcome.result)}
    uris: dict[str, str] = {}
    with root.write_partition(target) as writer:
        for name, payload in files.items():
            with root.fs.open_output_stream(f"{writer.staging}/{name}") as out:
                out.write(payload)
            uris[name] = root.uri(f"{target}/{name}")
        offsets = np.cumsum([0] + [d.table.num_rows for d in days]).tolist()
        writer.manifest = Manifest(
            dataset=f"{VALIDATION_REPORTS[0]}/{VALIDATION_REPORTS[1]}/chunks",
            partition=f"{first}_{last}",
            step="validate",
            inputs=[d.record for d in days],
            outputs=[{"uri": u, "volatile": "holds GX validation time and run ids"} for u in uris.values()],
            row_counts={"rows": offsets[-1], "days": len(days)},
            params={"day_row_offsets": {d.day.isoformat(): o for d, o in zip(days, offsets, strict=False)}},
        )
    return uris, files


def _day_gx_files(
    day: StagedDay,
    judged: DayJudgement,
    outcome: GxOutcome,
    chunk: list[StagedDay],
    offset: int,
    chunk_uris: dict[str, str],
) -> dict[str, bytes]:
    """The day's gx_result.json / data_docs.html when its GX run covered several days.

    gx_result.json keeps GX's result layout (``results[].expectation_config`` with the reject code in
    its ``meta``, ``results[].result.unexpected_count`` and ``unexpected_index_list`` of day-local
    ``_row_id``s) with the day's own counts, and points at the chunk's full GX result; GX's own
    statistics that need the chunk (missing counts, percentages) stay in that file only.
    """
    n = day.table.num_rows
    results: list[dict[str, Any]] = []
    for res in outcome.result.results:
        cfg = res.expectation_config
        meta = dict(cfg.meta or {}) if cfg else {}
        code = meta.get("reject_code")
        if code is None:  # the row-count expectation: judged on the day's own row count
            body: dict[str, Any] = {"observed_value": n}
            success = judged.row_count_ok
        else:
            ids = judged.row_ids.get(code, np.empty(0, dtype=np.int64))
            body = {
                "unexpected_count": len(ids),
                "unexpected_index_column_names": [ROW_ID],
                "unexpected_index_list": [{ROW_ID: ids[:MAX_LISTED_ROWS].tolist()}] if len(ids) else [],
            }
            if len(ids) > MAX_LISTED_ROWS:
                body["flywheel_listed_rows"] = MAX_LISTED_ROWS
            success = len(ids) == 0
        results.append(
            {
                "expectation_config": {
                    "type": cfg.type if cfg else None,
                    "kwargs": dict(cfg.kwargs) if cfg else {},
                    "meta": meta,
                },
                "success": success,
                "result": body,
            }
        )
    ok = sum(1 for r in results if r["success"])
    payload = {
        "suite_name": outcome.result.suite_name,
        "success": judged.success,
        "statistics": {"evaluated_expectations": len(results), "successful_expectations": ok,
                       "unsuccessful_expectations": len(results) - ok},
        "results": results,
        "flywheel_chunk": {
            "note": "GX validated this day together with the other days of its chunk; the counts here are"
            " this day's, the full GX result (row ids = positions in the chunk) is gx_result_uri",
            "days": [chunk[0].day.isoformat(), chunk[-1].day.isoformat()],
            "n_days": len(chunk),
            "row_offset": offset,
            "gx_result_uri": chunk_uris[GX_RESULT_FILE],
            "data_docs_uri": chunk_uris[DATA_DOCS_FILE],
        },
    }  # fmt: skip
    return {
        GX_RESULT_FILE: _json_bytes(payload),
        DATA_DOCS_FILE: chunk_day_docs_html(day.day.isoformat(), payload),
    }


def _judge_chunk(
    root: DataRoot, chunk: list[StagedDay], config: RuleConfig, suite: TripSuite
) -> list[DayJudgement]:
    """Run GX once over the chunk's days and cut its verdict back into one judgement per day."""
    days = [(d.day, d.table.num_rows) for d in chunk]
    tables = [d.table.replace_schema_metadata(None) for d in chunk]
    outcome = suite.run_chunk(pa.concat_tables(tables), days)
    total = max(sum(n for _, n in days), 1)
    if len(chunk) == 1:  # GX's own result is the day's result, as before chunking
        trim_result(outcome.result)
        files = {
            GX_RESULT_FILE: gx_result_json(outcome.result),
            DATA_DOCS_FILE: data_docs_html(outcome.result),
        }
        return [
            DayJudgement(outcome.row_ids, outcome.unexpected_counts, outcome.row_count_ok,
                         bool(outcome.result.success), outcome.seconds, files)
        ]  # fmt: skip
    chunk_uris, _ = _chunk_report(root, chunk, outcome)
    judgements = []
    offset = 0
    min_rows = 0 if config.allow_empty else 1
    for staged, (_, n) in zip(chunk, days, strict=True):
        row_ids: dict[str, npt.NDArray[np.int64]] = {}
        for code, ids in outcome.row_ids.items():  # sorted positions in the chunk
            lo, hi = np.searchsorted(ids, [offset, offset + n])
            row_ids[code] = ids[lo:hi] - offset
        counts = {code: len(ids) for code, ids in row_ids.items()}
        row_count_ok = n >= min_rows
        judged = DayJudgement(
            row_ids, counts, row_count_ok, row_count_ok and not any(counts.values()),
            outcome.seconds * n / total, {},
        )  # fmt: skip
        judged.report_files = _day_gx_files(staged, judged, outcome, chunk, offset, chunk_uris)
        judgements.append(judged)
        offset += n
    return judgements


def validate_interval(
    root: DataRoot, interval: Interval, settings: Settings, max_chunk_rows: int = DEFAULT_MAX_CHUNK_ROWS
) -> dict[str, Any]:
    """Validate ``staging/trips/dt=D`` for every day D of ``interval``.

    GX runs once per chunk of whole days of up to ``max_chunk_rows`` rows (see :func:`plan_chunks`);
    every output but the volatile GX files is the same whatever the chunking.

    Returns:
        the step summary: per day the counts, per-reason counts, verdict and URIs; totals; seconds.

    Raises:
        PartitionError: a staging partition is missing or incomplete.
        ValidationFailed: a batch-level rule failed on at least one day (after all reports are written).
    """
    started = time.perf_counter()
    config = RuleConfig.from_settings(settings)
    suite = TripSuite(config)
    partitions: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    gx_total = 0.0
    # day sizes from the staging manifests (also refuses missing partitions before any work is done)
    records = {day: input_record(root, partition(root, STAGING, day)) for day in interval.days()}
    day_rows = [(day, int(rec["rows"].get("rows", 0))) for day, rec in records.items()]
    for chunk_days in plan_chunks(day_rows, max_chunk_rows):
        t0 = time.perf_counter()
        staged = [_read_day(root, day) for day in chunk_days]
        good = [d for d in staged if not d.problems]
        judged = (
            dict(zip([d.day for d in good], _judge_chunk(root, good, config, suite), strict=True))
            if good
            else {}
        )
        for day_data in staged:
            acc = _write_day(root, day_data, config, judged.get(day_data.day))
            _summarise_day(partitions, failures, acc, judged.get(day_data.day))
        gx_total += sum(j.seconds for j in judged.values())
        log.info(
            "validate %s..%s: %d day(s), %d rows in %.2f s",
            chunk_days[0], chunk_days[-1], len(chunk_days), sum(d.table.num_rows for d in staged),
            time.perf_counter() - t0,
        )  # fmt: skip
    return _summary(interval, partitions, failures, gx_total, started)


def _summarise_day(
    partitions: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    acc: dict[str, Any],
    judged: DayJudgement | None,
) -> None:
    """Append the day's summary entry and its failures."""
    day = acc["partition"]
    gx_seconds = judged.seconds if judged else 0.0
    failures.extend(acc["failures"])
    outputs = acc.get("outputs", {})
    partitions.append(
        {
            "dt": day,
            "verdict": acc["verdict"],
            "failed_rules": [f["rule"] for f in acc["failures"]],
            "rows_in": acc["rows_in"],
            "accepted": acc["accepted"],
            "quarantined": acc["quarantined"],
            "reject_rate": acc["reject_rate"],
            "by_reason": {k: v for k, v in acc["by_reason"].items() if v},
            "accepted_uri": outputs.get("accepted", {}).get("uri"),
            "quarantine_uri": outputs.get("quarantine", {}).get("uri"),
            "report_uri": acc["report_uris"][INDEX_FILE],
            "accounting_uri": acc["report_uris"][ACCOUNTING_FILE],
            "gx_seconds": round(gx_seconds, 3),
        }
    )
    log.info(
        "validate %s: %d rows in, %s accepted, %s quarantined, verdict %s",
        day, acc["rows_in"], acc["accepted"], acc["quarantined"], acc["verdict"],
    )  # fmt: skip


def _summary(
    interval: Interval,
    partitions: list[dict[str, Any]],
    failures: list[dict[str, Any]],
    gx_total: float,
    started: float,
) -> dict[str, Any]:
    """The step summary; raises :class:`ValidationFailed` when any day failed a batch rule."""
    summary: dict[str, Any] = {
        "step": "validate",
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "partitions": partitions,
        "rows_in": sum(p["rows_in"] for p in partitions),
        "accepted": sum(p["accepted"] or 0 for p in partitions),
        "quarantined": sum(p["quarantined"] or 0 for p in partitions),
        "verdict": VERDICT_FAILED if failures else VERDICT_PASSED,
        "gx_seconds": round(gx_total, 3),
        "seconds": round(time.perf_counter() - started, 3),
    }
    if failures:
        lines = "\n  ".join(f["message"] for f in failures)
        n_failed = len({f["dt"] for f in failures})
        reports = ", ".join(p["report_uri"] for p in partitions if p["verdict"] == VERDICT_FAILED)
        raise ValidationFailed(
            f"validation failed for {n_failed} of {len(partitions)} partition(s):\n  {lines}"
            f"\nreports: {reports}",
            failures,
            summary,
        )
    return summary
