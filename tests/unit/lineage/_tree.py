"""A data root of hand-written manifests shaped like the ones the steps write, for the lineage tests.

extract, transform, validate, publish, build-features and training-set for two days, written with the real
DataRoot writer; predictions partitions on demand.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from pathlib import Path
from typing import Any

import pyarrow as pa

from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, input_record

DAYS = [dt.date(2024, 3, 4), dt.date(2024, 3, 5)]
VIEWS = ("company_stats", "pickup_area_stats")
SERVICE = "taxi_tips_v1"
TS_KEY = "2024-03-04_2024-03-06"
ROWS = {DAYS[0]: 30, DAYS[1]: 40}


def table(tag: str, n: int) -> pa.Table:
    return pa.table({"trip_key": [f"{tag}-{i}" for i in range(n)], "value": [float(i) for i in range(n)]})


def write(root: DataRoot, path: str, data: pa.Table, **manifest: Any) -> str:
    """``data`` as the partition at ``path`` with a manifest of ``manifest``'s fields."""
    rel = path.removeprefix(root.base + "/")
    layer, dataset, key = rel.split("/")
    root.write_table(
        path,
        data,
        data.schema,
        Manifest(
            dataset=f"{layer}/{dataset}", partition=key.removeprefix("dt="), code_version="unit", **manifest
        ),
    )
    return path


def build_root(base: Path) -> DataRoot:
    """raw -> staging -> accepted/quarantine/report -> curated -> features -> training set, for 2 days."""
    root = DataRoot(str(base))
    curated: dict[dt.date, str] = {}
    for day in DAYS:
        n, key = ROWS[day], day.isoformat()
        source = {
            "source": "synthetic",
            "seed": 7,
            "trips_per_day": n,
            "interval": {"start": key, "end": key},
        }
        raw = write(
            root,
            root.partition_path("raw", "trips", day),
            table(f"raw{key}", n),
            step="extract",
            inputs=[source],
            row_counts={"rows": n, "rows_without_timestamp": 0},
            params={"source": "synthetic"},
        )
        staging = write(
            root,
            root.partition_path("staging", "trips", day),
            table(f"stg{key}", n),
            step="transform",
            inputs=[input_record(root, raw)],
            row_counts={"rows": n},
        )
        accepted = write(
            root,
            root.partition_path("staging", "trips_accepted", day),
            table(f"acc{key}", n - 1),
            step="validate",
            inputs=[input_record(root, staging)],
            row_counts={"rows": n - 1},
        )
        quarantine = write(
            root,
            root.partition_path("quarantine", "trips", day),
            table(f"q{key}", 1),
            step="validate",
            inputs=[input_record(root, staging)],
            row_counts={"rows": 1},
        )
        report = write(
            root,
            root.partition_path("reports", "validation", day),
            table(f"rep{key}", 1),
            step="validate",
            inputs=[],
            row_counts={"rows": 1},
        )
        curated[day] = write(
            root,
            root.partition_path("curated", "trips", day),
            table(f"cur{key}", n - 1),
            step="publish",
            inputs=[
                {"role": "raw", **input_record(root, raw)},
                {"role": "staging", **input_record(root, staging)},
                {"role": "accepted", **input_record(root, accepted)},
                {"role": "quarantine", **input_record(root, quarantine)},
                {
                    "role": "validation_report",
                    "uri": root.uri(report),
                    "files": input_record(root, report)["files"],
                },
            ],
            row_counts={"raw": n, "curated": n - 1, "quarantined": 1},
            params={"reports": {"index": f"{root.uri(report)}/index.html"}},
        )
    for view in VIEWS:
        for i, day in enumerate(DAYS):
            # trailing window: every curated day up to this one (so curated dt=DAYS[0] is shared)
            write(
                root,
                root.partition_path("features", view, day),
                table(f"{view}{day}", 5),
                step="build-features",
                inputs=[input_record(root, curated[d]) for d in DAYS[: i + 1]],
                row_counts={"rows": 5, "window_days": i + 1},
                params={"view": view},
            )
    inputs = [input_record(root, curated[d]) for d in DAYS] + [
        input_record(root, root.partition_path("features", v, d)) for v in VIEWS for d in DAYS
    ]
    write(
        root,
        f"{root.base}/training_sets/{SERVICE}/{TS_KEY}",
        table("ts", 69),
        step="training-set",
        inputs=inputs,
        row_counts={"rows": 69, "labelled": 69, "positives": 20},
        params={
            "feature_service": SERVICE,
            "interval": {"start": "2024-03-04", "end": "2024-03-06"},
            "label_rate": 20 / 69,
        },
    )
    return root


def training_set_sha(root: DataRoot) -> str:
    manifest = root.read_manifest(f"{root.base}/training_sets/{SERVICE}/{TS_KEY}")
    return hashlib.sha256("".join(o["sha256"] for o in manifest.outputs).encode()).hexdigest()


def write_predictions(root: DataRoot, model_name: str, model: dict[str, Any], day: dt.date = DAYS[1]) -> str:
    inputs = [input_record(root, root.partition_path("curated", "trips", day))]
    inputs += [input_record(root, root.partition_path("features", v, d)) for v in VIEWS for d in DAYS]
    path = root.partition_path("predictions", model_name, day)
    return write(
        root,
        path,
        table(f"pred{model_name}", 3),
        step="predict",
        inputs=[*inputs, {"model": model}],
        row_counts={"rows": 3, "missing_features": 1},
        params={
            "model": f"{model_name}@champion",
            "shards": 2,
            "feature_service": SERVICE,
            "threshold": 0.25,
            "interval": {"start": day.isoformat(), "end": "2024-03-06"},
        },
    )


def settings_for(root: DataRoot) -> Settings:
    return Settings(data_root=root.base)
