"""Publish: re-check each day's row accounting and lineage, then copy the accepted rows to curated/trips/dt=D.

An interval is published whole or not at all (see ``docs/ingest.md`` for the checks).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import pyarrow.parquet as pq

from ml_tasks.contract import (
    ACCEPTED,
    ACCOUNTING_FILE,
    CURATED,
    DATA_DOCS_FILE,
    GX_RESULT_FILE,
    INDEX_FILE,
    QUARANTINE,
    RAW,
    STAGING,
    VALIDATION_REPORTS,
)
from ml_tasks.intervals import Interval
from ml_tasks.schema import CURATED_SCHEMA
from ml_tasks.settings import Settings
from ml_tasks.storage import (
    ContractFileError,
    DataRoot,
    Manifest,
    PartitionError,
    file_sha256,
    input_record,
)
from ml_tasks.validation.layout import VERDICT_PASSED, AccountingFile, partition, read_accounting

log = logging.getLogger(__name__)


class AccountingError(PartitionError):
    """Rows that do not add up, or partitions that do not belong together: publishing is refused."""


def _sha_by_name(files: list[dict[str, Any]]) -> dict[str, str]:
    return {str(f["uri"]).rsplit("/", 1)[1]: str(f["sha256"]) for f in files if "sha256" in f}


def _file_shas(files: list[AccountingFile]) -> dict[str, str]:
    return {f.uri.rsplit("/", 1)[1]: f.sha256 for f in files}


def _check_day(root: DataRoot, day: dt.date) -> tuple[dict[str, Any], list[str]]:
    """Everything publish needs for ``day``, and the problems that forbid publishing it."""
    key = day.isoformat()
    problems: list[str] = []
    report_path = partition(root, VALIDATION_REPORTS, day)
    try:
        report_manifest = root.read_manifest(report_path)
        accounting = read_accounting(root, day)
    except (PartitionError, FileNotFoundError) as exc:
        return {}, [f"dt={key}: no validation report ({exc}); run `ml-tasks validate` for this day first"]
    except ContractFileError as exc:
        return {}, [f"dt={key}: {exc}; run `ml-tasks validate` for this day again"]
    if accounting.verdict != VERDICT_PASSED:
        reasons = "; ".join(f.message for f in accounting.failures) or "no reason recorded"
        return {}, [f"dt={key}: validation verdict is {accounting.verdict!r}, not published: {reasons}"]

    paths = {
        "raw": partition(root, RAW, day),
        "staging": partition(root, STAGING, day),
        "accepted": partition(root, ACCEPTED, day),
        "quarantine": partition(root, QUARANTINE, day),
    }
    records: dict[str, dict[str, Any]] = {}
    manifests: dict[str, Manifest] = {}
    for name, path in paths.items():
        try:
            manifests[name] = root.read_manifest(path)
            records[name] = input_record(root, path)
        except PartitionError as exc:
            problems.append(f"dt={key}: {name} partition unusable: {exc}")
    if problems:
        return {}, problems

    rows = {name: int(m.row_counts.get("rows", -1)) for name, m in manifests.items()}
    raw, staging, accepted, quarantined = rows["raw"], rows["staging"], rows["accepted"], rows["quarantine"]
    if raw != accepted + quarantined:
        problems.append(
            f"dt={key}: rows do not add up: raw {raw} != curated {accepted} + quarantined {quarantined}"
            f" (difference {raw - accepted - quarantined})"
        )
    if staging != raw:
        problems.append(f"dt={key}: staging has {staging} rows but raw has {raw}")
    expected = {"rows_in": staging, "accepted": accepted, "quarantined": quarantined}
    for field, value in expected.items():
        said = getattr(accounting, field)
        if said != value:
            problems.append(f"dt={key}: accounting.json says {field}={said} but the partitions hold {value}")
    by_reason = accounting.by_reason
    quarantine_reasons = {k.removeprefix("reason."): v for k, v in manifests["quarantine"].row_counts.items()
                          if k.startswith("reason.")}  # fmt: skip
    if quarantine_reasons != by_reason:
        problems.append(f"dt={key}: per-reason counts differ between quarantine manifest and accounting.json")

    # lineage: each layer was built from the files present now
    staged_from = manifests["staging"].inputs[0].get("files") if manifests["staging"].inputs else None
    if staged_from != records["raw"]["files"]:
        problems.append(
            f"dt={key}: staging was built from other raw files than those present: re-run transform"
        )
    if accounting.inputs["staging"].files != records["staging"]["files"]:
        problems.append(
            f"dt={key}: validation ran on other staging files than those present: re-run validate"
        )
    for name in ("accepted", "quarantine"):
        output = accounting.outputs.get(name)
        described = _file_shas(output.files) if output else {}
        if described != records[name]["files"]:
            problems.append(f"dt={key}: {name} files differ from those the validation accounting describes")

    report_files = _sha_by_name(report_manifest.outputs)
    context = {
        "paths": paths,
        "records": records,
        "rows": rows,
        "by_reason": by_reason,
        "report": {
            "uri": root.uri(report_path),
            "files": report_files,
            "links": {
                "index": root.uri(f"{report_path}/{INDEX_FILE}"),
                "accounting": root.uri(f"{report_path}/{ACCOUNTING_FILE}"),
                "gx_result": root.uri(f"{report_path}/{GX_RESULT_FILE}"),
                "data_docs": root.uri(f"{report_path}/{DATA_DOCS_FILE}"),
            },
        },
        "max_reject_rate": accounting.max_reject_rate,
    }
    return context, problems


def _copy_accepted(
    root: DataRoot, source: str, checked: dict[str, str], staging: str, target: str
) -> list[dict[str, Any]]:
    """Copy the accepted partition's files into ``staging`` byte for byte; return their output records.

    ``checked``: file name -> sha256, checked against the validation accounting just before, so these
    are the files validate wrote in :data:`CURATED_SCHEMA`; a copy costs a fraction of decoding and
    re-encoding them (``docs/ingest.md``). Each footer's schema and each copy's hash are checked again.
    """
    outputs = []
    for path in root.parquet_files(source):
        name = path.rsplit("/", 1)[1]
        meta = pq.read_metadata(path, filesystem=root.fs)
        if not meta.schema.to_arrow_schema().remove_metadata().equals(CURATED_SCHEMA):
            raise AccountingError(f"{root.uri(path)} is not in the curated schema: re-run validate")
        copy = f"{staging}/{name}"
        root.fs.copy_file(path, copy)
        sha = file_sha256(copy, root.fs)
        if sha != checked.get(name):
            raise AccountingError(f"{root.uri(path)} changed while it was published: re-run validate")
        outputs.append({"uri": root.uri(f"{target}/{name}"), "sha256": sha, "rows": meta.num_rows})
    return outputs


def publish(root: DataRoot, interval: Interval, settings: Settings) -> dict[str, Any]:
    """Write ``curated/trips/dt=D`` for every day D of ``interval`` after checking the accounting.

    Returns:
        the step summary: per day the curated URI, counts (raw, curated, quarantined, per reason) and
        report URIs; totals; seconds.

    Raises:
        AccountingError: a day is not validated, failed validation, or its rows do not add up
            (nothing of the interval is published then).
    """
    started = time.perf_counter()
    checked: dict[dt.date, dict[str, Any]] = {}
    problems: list[str] = []
    for day in interval.days():
        context, day_problems = _check_day(root, day)
        problems.extend(day_problems)
        checked[day] = context
    if problems:
        raise AccountingError(
            f"refusing to publish {interval}: {len(problems)} problem(s):\n  " + "\n  ".join(problems)
        )

    partitions = []
    for day, ctx in checked.items():
        rows = ctx["rows"]
        target = root.partition_path(*CURATED, day)
        with root.write_partition(target) as writer:
            outputs = _copy_accepted(
                root, ctx["paths"]["accepted"], ctx["records"]["accepted"]["files"], writer.staging, target
            )
            written = sum(int(o["rows"]) for o in outputs)
            if written != rows["accepted"]:  # pragma: no cover - the files were hash-checked above
                raise AccountingError(f"dt={day}: copied {written} rows, expected {rows['accepted']}")
            records = ctx["records"]
            writer.manifest = Manifest(
                dataset=f"{CURATED[0]}/{CURATED[1]}",
                partition=day.isoformat(),
                step="publish",
                inputs=[
                    {"role": "raw", **records["raw"]},
                    {"role": "staging", **records["staging"]},
                    {"role": "accepted", **records["accepted"]},
                    {"role": "quarantine", **records["quarantine"]},
                    {
                        "role": "validation_report",
                        "uri": ctx["report"]["uri"],
                        "files": ctx["report"]["files"],
                    },
                ],
                outputs=outputs,
                row_counts={
                    "raw": rows["raw"],
                    "curated": written,
                    "quarantined": rows["quarantine"],
                    **{f"quarantined.{code}": n for code, n in sorted(ctx["by_reason"].items())},
                },
                params={
                    "reports": ctx["report"]["links"],
                    "quarantine_uri": root.uri(ctx["paths"]["quarantine"]),
                    "max_reject_rate": ctx["max_reject_rate"],
                },
            )
        log.info(
            "publish %s: %d raw = %d curated + %d quarantined", day, rows["raw"], written, rows["quarantine"]
        )
        partitions.append(
            {
                "dt": day.isoformat(),
                "uri": root.uri(target),
                "rows": written,
                "raw": rows["raw"],
                "quarantined": rows["quarantine"],
                "by_reason": {k: v for k, v in ctx["by_reason"].items() if v},
                "quarantine_uri": root.uri(ctx["paths"]["quarantine"]),
                "report_uri": ctx["report"]["links"]["index"],
            }
        )
    return {
        "step": "publish",
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "partitions": partitions,
        "totals": {
            "raw": sum(p["raw"] for p in partitions),
            "curated": sum(p["rows"] for p in partitions),
            "quarantined": sum(p["quarantined"] for p in partitions),
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
