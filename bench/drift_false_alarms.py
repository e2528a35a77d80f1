"""Drift false alarms and detection on the real Chicago samples: Evidently's fixed 0.1 (before) against the
size-aware thresholds (after), per current-sample size.

False alarms: same-distribution splits (TFDV train vs eval; two random halves of 2013-2015 of
tfx_simple_data.csv), seeded draws of 30 / 300 / 3,000 rows; per column the share of draws flagged, and
the share of draws that would be a dataset drift (>= 30 % of the judged inputs). Detection: 2013-2015 of
tfx_simple_data.csv against draws of the 2019 rows of the BigQuery sample (real later data).

Prints one JSON line. Usage: python bench/drift_false_alarms.py [--draws 400]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench._samples import add_samples_argument  # noqa: E402
from ml_tasks.training.frames import rows_between, training_frame_from_csv  # noqa: E402
from tests.integration import _drift_rates as rates  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=400)
    add_samples_argument(parser)
    ns = parser.parse_args()
    started = time.perf_counter()
    out: dict[str, object] = {"draws": ns.draws}
    for name, (reference, pool) in {
        "tfdv_train_vs_eval": rates.tfdv_split(ns.samples),
        "tfx_2013_2015_halves": rates.tfx_halves(ns.samples),
    }.items():
        out[f"false_alarms/{name}"] = rates.summary(rates.flag_rates(reference, pool, draws=ns.draws))
    early = rows_between(
        training_frame_from_csv(ns.samples / "tfx_simple_data.csv"), dt.date(2013, 1, 1), dt.date(2016, 1, 1)
    )
    later = rates.bigquery_2019(ns.samples)
    detection = rates.flag_rates(early, later, sizes=(30, 300, later.num_rows), draws=ns.draws)
    out["detection/2019_vs_2013_2015"] = rates.summary(detection)
    out["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
