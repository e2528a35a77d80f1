"""The validate step: per chunk of whole staged days, read and schema-check, judge with GX, write the split.

Order per day (reports exist before any failure is raised): read ``staging/trips/dt=D``; check its
schema; judge its rows (:mod:`.judge`); write quarantine, accepted (only when passing) and the report
(:mod:`.accounting`). Batch-level failures of any day raise one :class:`ValidationFailed` at the end.
See ``docs/ingest.md``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from ml_tasks.contract import ACCOUNTING_FILE, INDEX_FILE, STAGING
from ml_tasks.intervals import Interval
from ml_tasks.schema import CURATED_SCHEMA
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, input_record
from ml_tasks.validation import ValidationFailed
from ml_tasks.validation.accounting import write_day
from ml_tasks.validation.judge import DayJudgement, StagedDay, judge_chunk, judge_without_rows
from ml_tasks.validation.layout import VERDICT_FAILED, VERDICT_PASSED, partition
from ml_tasks.validation.rules import RuleConfig, gx_columns

if TYPE_CHECKING:
    from ml_tasks.validation.suite import TripSuite

log = logging.getLogger(__name__)


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


def _read_day(root: DataRoot, day: dt.date) -> StagedDay:
    """The day's schema check, row count and the columns the rules read (not the whole rows: memory)."""
    source = partition(root, STAGING, day)
    staging_record = input_record(root, source)  # refuses a missing or incomplete partition
    files = root.parquet_files(source)
    metas = [pq.read_metadata(f, filesystem=root.fs) for f in files]
    schemas = [m.schema.to_arrow_schema().remove_metadata() for m in metas]
    problems = schema_problems(schemas[0]) if schemas else []
    if any(not s.equals(schemas[0]) for s in schemas[1:]):
        problems.append("the partition's files differ in schema")
    rows = sum(m.num_rows for m in metas)
    if problems or not metas:
        table = CURATED_SCHEMA.empty_table().select(gx_columns())
    else:
        tables = [pq.read_table(f, filesystem=root.fs, columns=gx_columns()) for f in files]
        table = pa.concat_tables(tables)
    return StagedDay(day, staging_record, table, problems, source, rows)


DEFAULT_MAX_CHUNK_ROWS = 300_000  # rows per GX run (whole days; a bigger day is judged in slices): RSS


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


def validate_interval(
    root: DataRoot, interval: Interval, settings: Settings, max_chunk_rows: int = DEFAULT_MAX_CHUNK_ROWS
) -> dict[str, Any]:
    """Validate ``staging/trips/dt=D`` for every day D of ``interval``.

    GX runs once per chunk of whole days of up to ``max_chunk_rows`` rows (see :func:`plan_chunks`); a
    day above that bound is judged in slices of ``max_chunk_rows`` rows (``judge.judge_day_in_slices``).
    Every output but the volatile GX files is the same whatever the chunking.

    Returns:
        the step summary: per day the counts, per-reason counts, verdict and URIs; totals; seconds.

    Raises:
        PartitionError: a staging partition is missing or incomplete.
        ValidationFailed: a batch-level rule failed on at least one day (after all reports are written).
    """
    started = time.perf_counter()
    config = RuleConfig.from_settings(settings)
    suite = _LazySuite(config)
    partitions: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    gx_total = 0.0
    # day sizes from the staging manifests (also refuses missing partitions before any work is done)
    records = {day: input_record(root, partition(root, STAGING, day)) for day in interval.days()}
    day_rows = [(day, int(rec["rows"].get("rows", 0))) for day, rec in records.items()]
    for chunk_days in plan_chunks(day_rows, max_chunk_rows):
        # a function per chunk: its rows are freed before the next chunk is read (one chunk in memory)
        gx_total += _validate_chunk(root, chunk_days, config, suite, max_chunk_rows, partitions, failures)
    return _summary(interval, partitions, failures, gx_total, started)


class _LazySuite:
    """The GX suite, made for the first chunk with rows: great_expectations (~2.5 s) is imported only then."""

    def __init__(self, config: RuleConfig) -> None:
        self.config = config
        self._suite: TripSuite | None = None

    def get(self) -> TripSuite:
        if self._suite is None:
            from ml_tasks.validation.suite import TripSuite

            self._suite = TripSuite(self.config)
        return self._suite


def _validate_chunk(
    root: DataRoot,
    chunk_days: list[dt.date],
    config: RuleConfig,
    suite: _LazySuite,
    max_chunk_rows: int,
    partitions: list[dict[str, Any]],
    failures: list[dict[str, Any]],
) -> float:
    """Read, judge and split one chunk of days; append their summaries; return the chunk's GX seconds."""
    t0 = time.perf_counter()
    staged = [_read_day(root, day) for day in chunk_days]
    good = [d for d in staged if not d.problems]
    if any(d.table.num_rows for d in good):
        judgements = judge_chunk(root, good, config, suite.get(), max_chunk_rows)
    else:  # no row to judge (or no day with the right schema): no GX run, no GX import
        judgements = judge_without_rows(good, config) if good else []
    judged = dict(zip([d.day for d in good], judgements, strict=True))
    for day_data in staged:
        acc = write_day(root, day_data, config, judged.get(day_data.day))
        _summarise_day(partitions, failures, acc, judged.get(day_data.day))
    log.info(
        "validate %s..%s: %d day(s), %d rows in %.2f s",
        chunk_days[0], chunk_days[-1], len(chunk_days), sum(d.rows for d in staged),
        time.perf_counter() - t0,
    )  # fmt: skip
    return sum(j.seconds for j in judgements)


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
