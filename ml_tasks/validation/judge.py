"""Run the GX suite once per chunk of whole days and cut its verdict back into one judgement per day.

A one-day chunk keeps GX's own result and data docs; a multi-day chunk writes them once under
``reports/validation/chunks/<first>_<last>/`` and each day gets its own counts pointing there.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

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
from ml_tasks.validation.rules import RuleConfig
from ml_tasks.validation.suite import ROW_ID, GxOutcome, TripSuite


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
        GX_RESULT_FILE: json_bytes(payload),
        DATA_DOCS_FILE: chunk_day_docs_html(day.day.isoformat(), payload),
    }


def judge_chunk(
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
