"""Run the GX suite once per chunk of whole days and cut its verdict back into one judgement per day.

A one-day chunk keeps GX's own result and data docs; a multi-day chunk writes them once under
``reports/validation/chunks/<first>_<last>/`` and each day gets its own counts pointing there.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from ml_tasks.contract import DATA_DOCS_FILE, GX_RESULT_FILE, VALIDATION_REPORTS
from ml_tasks.storage import DataRoot, Manifest
from ml_tasks.validation.reports import (
    MAX_LISTED_ROWS,
    chunk_day_docs_html,
    data_docs_html,
    gx_result_json,
    json_bytes,
    trim_result,
)
from ml_tasks.validation.rules import ROW_ID, ROW_RULES, SUITE_NAME, ExpectationSpec, RuleConfig, suite_specs

if TYPE_CHECKING:  # GX runs only for days with rows: the step imports .suite (and GX) only then
    from ml_tasks.validation.suite import GxOutcome, TripSuite


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
    table: pa.Table  # only the columns the rules read (rows are streamed from ``path`` for the split)
    problems: list[str]  # schema_mismatch findings (empty: the day can be judged row by row)
    path: str = ""  # the staging partition
    rows: int = 0  # its row count (also when the schema is wrong and no row was read)


def _run_report(
    root: DataRoot, name: str, days: list[StagedDay], outcome: GxOutcome, rows: int, params: dict[str, Any]
) -> dict[str, str]:
    """Write the GX result and data docs of one GX run that is not one whole day; return their URIs.

    Rendering GX's data docs costs ~0.2 s per result whatever its size: once per run, not per day.
    Path: ``reports/validation/chunks/<name>/`` (not a ``dt=`` partition: nothing lists it as a day).
    """
    target = f"{root.dataset_path(*VALIDATION_REPORTS)}/chunks/{name}"
    trim_result(outcome.result)
    files = {GX_RESULT_FILE: gx_result_json(outcome.result), DATA_DOCS_FILE: data_docs_html(outcome.result)}
    uris: dict[str, str] = {}
    with root.write_partition(target) as writer:
        for file_name, payload in files.items():
            with root.fs.open_output_stream(f"{writer.staging}/{file_name}") as out:
                out.write(payload)
            uris[file_name] = root.uri(f"{target}/{file_name}")
        writer.manifest = Manifest(
            dataset=f"{VALIDATION_REPORTS[0]}/{VALIDATION_REPORTS[1]}/chunks",
            partition=name,
            step="validate",
            inputs=[d.record for d in days],
            outputs=[{"uri": u, "volatile": "holds GX validation time and run ids"} for u in uris.values()],
            row_counts={"rows": rows, "days": len(days)},
            params=params,
        )
    return uris


def _chunk_report(root: DataRoot, days: list[StagedDay], outcome: GxOutcome) -> dict[str, str]:
    """The report of a multi-day chunk, ``chunks/<first>_<last>/``: row ids are positions in the chunk
    (the days' rows concatenated in date order)."""
    first, last = days[0].day.isoformat(), days[-1].day.isoformat()
    offsets = np.cumsum([0] + [d.table.num_rows for d in days]).tolist()
    params = {"day_row_offsets": {d.day.isoformat(): o for d, o in zip(days, offsets, strict=False)}}
    return _run_report(root, f"{first}_{last}", days, outcome, offsets[-1], params)


def _day_gx_files(
    day: StagedDay, judged: DayJudgement, configs: list[ExpectationSpec], pointer: dict[str, Any]
) -> dict[str, bytes]:
    """The day's gx_result.json / data_docs.html when its GX run(s) did not cover exactly the day.

    gx_result.json keeps GX's result layout (``results[].expectation_config`` with the reject code in
    its ``meta``, ``results[].result.unexpected_count`` and ``unexpected_index_list`` of day-local
    ``_row_id``s) with the day's own counts, and points at the chunk's full GX result; GX's own
    statistics that need the chunk (missing counts, percentages) stay in that file only.
    ``pointer`` (``flywheel_chunk``) says which GX run(s) judged the day and where their files are;
    ``configs``: the suite's expectations, in GX's result order.
    """
    n = day.table.num_rows
    results: list[dict[str, Any]] = []
    for cfg in configs:
        meta = dict(cfg.meta)
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
                    "type": cfg.type,
                    "kwargs": dict(cfg.kwargs),
                    "meta": meta,
                },
                "success": success,
                "result": body,
            }
        )
    ok = sum(1 for r in results if r["success"])
    payload = {
        "suite_name": SUITE_NAME,
        "success": judged.success,
        "statistics": {"evaluated_expectations": len(results), "successful_expectations": ok,
                       "unsuccessful_expectations": len(results) - ok},
        "results": results,
        "flywheel_chunk": pointer,
    }  # fmt: skip
    return {
        GX_RESULT_FILE: json_bytes(payload),
        DATA_DOCS_FILE: chunk_day_docs_html(day.day.isoformat(), payload),
    }


def _configs(outcome: GxOutcome) -> list[ExpectationSpec]:
    """The expectations of a GX run's result, in its order (kwargs as GX reports them: with batch_id)."""
    return [
        ExpectationSpec(cfg.type, dict(cfg.kwargs), dict(cfg.meta or {}), str(cfg.notes or ""))
        for cfg in (res.expectation_config for res in outcome.result.results)
        if cfg
    ]


def judge_without_rows(chunk: list[StagedDay], config: RuleConfig) -> list[DayJudgement]:
    """Days with no row at all: no row rule has anything to judge, so GX is neither run nor imported.

    The row-count rule is judged on each day's row count, as for a day in a multi-day chunk; the
    day's gx_result.json lists every expectation (as GX's configuration would) with its count, 0.
    """
    configs = suite_specs(config)
    ok = config.allow_empty
    pointer = {
        "note": "the day has no rows: no GX run (no row to validate); empty_partition is judged on the"
        " row count (0) with allow_empty",
        "days": [chunk[0].day.isoformat(), chunk[-1].day.isoformat()],
        "n_days": len(chunk),
        "row_offset": 0,
        "gx_result_uri": None,
        "data_docs_uri": None,
    }
    judgements = []
    for day in chunk:
        row_ids = {rule.code: np.empty(0, dtype=np.int64) for rule in ROW_RULES}
        judged = DayJudgement(row_ids, {code: 0 for code in row_ids}, ok, ok, 0.0, {})
        judged.report_files = _day_gx_files(day, judged, configs, pointer)
        judgements.append(judged)
    return judgements


def judge_chunk(
    root: DataRoot, chunk: list[StagedDay], config: RuleConfig, suite: TripSuite, max_chunk_rows: int = 0
) -> list[DayJudgement]:
    """Run GX once over the chunk's days and cut its verdict back into one judgement per day.

    A one-day chunk of more than ``max_chunk_rows`` rows (when > 0) is judged in slices of half that
    instead (:func:`judge_day_in_slices`): the whole day's columns and one slice's GX run are in memory
    together, about what one full chunk of smaller days costs. Days without rows are not run through GX.
    """
    if len(chunk) == 1 and 0 < max_chunk_rows < chunk[0].table.num_rows:
        return [judge_day_in_slices(root, chunk[0], suite, max(max_chunk_rows // 2, 1))]
    if all(d.table.num_rows == 0 for d in chunk):
        return judge_without_rows(chunk, config)
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
    chunk_uris = _chunk_report(root, chunk, outcome)
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
        pointer = {
            "note": "GX validated this day together with the other days of its chunk; the counts here are"
            " this day's, the full GX result (row ids = positions in the chunk) is gx_result_uri",
            "days": [chunk[0].day.isoformat(), chunk[-1].day.isoformat()],
            "n_days": len(chunk),
            "row_offset": offset,
            "gx_result_uri": chunk_uris[GX_RESULT_FILE],
            "data_docs_uri": chunk_uris[DATA_DOCS_FILE],
        }
        judged.report_files = _day_gx_files(staged, judged, _configs(outcome), pointer)
        judgements.append(judged)
        offset += n
    return judgements


def judge_day_in_slices(root: DataRoot, day: StagedDay, suite: TripSuite, slice_rows: int) -> DayJudgement:
    """Run GX over consecutive slices of one day, at most ``slice_rows`` rows each: memory.

    GX's peak memory grows with the rows of one run (the frame and its per-metric copies), so a day
    bigger than the bound is cut into slices; every rule is per row (``outside_partition`` included:
    each slice is judged against its own day), so the failing rows are the same as in one run. Each
    slice's GX result and data docs go to ``chunks/<day>_rows_<lo>-<hi>/``; the day's own files hold
    its counts and list the slices.
    """
    n = day.table.num_rows
    found: dict[str, list[npt.NDArray[np.int64]]] = {}
    slices: list[dict[str, Any]] = []
    seconds = 0.0
    first: GxOutcome | None = None
    for lo in range(0, n, slice_rows):
        hi = min(lo + slice_rows, n)
        part = day.table.slice(lo, hi - lo).replace_schema_metadata(None)
        outcome = suite.run_chunk(part, [(day.day, hi - lo)])
        for code, ids in outcome.row_ids.items():
            found.setdefault(code, []).append(ids + lo)
        seconds += outcome.seconds
        params = {"day": day.day.isoformat(), "day_rows": [lo, hi]}
        uris = _run_report(root, f"{day.day.isoformat()}_rows_{lo}-{hi}", [day], outcome, hi - lo, params)
        slices.append({"rows": [lo, hi], **uris})
        first = first or outcome
    assert first is not None  # n > slice_rows > 0: at least two slices
    row_ids = {code: np.concatenate(parts) for code, parts in found.items()}
    counts = {code: len(ids) for code, ids in row_ids.items()}
    judged = DayJudgement(row_ids, counts, True, not any(counts.values()), seconds, {})
    pointer = {
        "note": f"GX validated this day in {len(slices)} slices of at most {slice_rows} rows; the counts"
        " here are the day's, each slice's full GX result (row ids = positions in the slice) is listed",
        "days": [day.day.isoformat(), day.day.isoformat()],
        "n_days": 1,
        "row_offset": 0,
        "gx_result_uri": slices[0][GX_RESULT_FILE],
        "data_docs_uri": slices[0][DATA_DOCS_FILE],
        "slices": [
            {"rows": s["rows"], "gx_result_uri": s[GX_RESULT_FILE], "data_docs_uri": s[DATA_DOCS_FILE]}
            for s in slices
        ],
    }
    judged.report_files = _day_gx_files(day, judged, _configs(first), pointer)
    return judged
