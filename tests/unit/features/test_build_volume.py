"""build_features at realistic volume: sums independent of threads and interval; late days rebuild."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pytest

from ml_tasks.contract import FEATURES_LAYER
from ml_tasks.features.build import build_features
from ml_tasks.features.spec import MAX_WINDOW, VIEWS
from ml_tasks.intervals import Interval
from ml_tasks.settings import Settings
from ml_tasks.sources.synthetic import SyntheticSource
from ml_tasks.storage import DataRoot
from tests.unit.features._build import D, days_between, partition_files, write_curated

# -- realistic volume: floating-point sums must not depend on threads or on the interval -----------------
SYNTH_TARGET = Interval(D(2024, 2, 28), D(2024, 3, 6))


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> DataRoot:
    """34 days x ~300 clean synthetic trips (enough rows for DuckDB to aggregate in parallel)."""
    data = DataRoot(str(tmp_path_factory.mktemp("synthetic") / "data"))
    source = SyntheticSource(trips_per_day=300, dirty_rate=0.0)
    first = SYNTH_TARGET.start - dt.timedelta(days=MAX_WINDOW - 1)
    for day in days_between(first, SYNTH_TARGET.end):
        raw = pa.concat_tables([b.table for b in source.read(Interval(day, day + dt.timedelta(days=1)))])
        write_curated(data, day, raw)
    return data


def feature_tables(root: DataRoot, days: Iterable[dt.date]) -> dict[str, pa.Table]:
    wanted = list(days)
    return {
        f"{view.name}/{day}": root.read_partition(root.partition_path(FEATURES_LAYER, view.dataset, day))
        for view in VIEWS
        for day in wanted
    }


def test_realistic_volume_values_agree_to_rounding(synthetic_root: DataRoot) -> None:
    """Whatever the bytes, re-runs and one-day builds agree on counts exactly and means to 1e-12."""
    settings = Settings(data_root=synthetic_root.base)
    build_features(synthetic_root, SYNTH_TARGET, settings)
    first = feature_tables(synthetic_root, SYNTH_TARGET.days())
    assert sum(t.num_rows for t in first.values()) > 300
    for day in SYNTH_TARGET.days():
        build_features(synthetic_root, SYNTH_TARGET.single(day), settings)
    again = feature_tables(synthetic_root, SYNTH_TARGET.days())
    for name, table in first.items():
        other = again[name]
        for column in table.column_names:
            a, b = table[column].to_pylist(), other[column].to_pylist()
            if pa.types.is_floating(table.schema.field(column).type):
                assert [x is None for x in a] == [y is None for y in b], (name, column)
                assert [x for x in a if x is not None] == pytest.approx(
                    [y for y in b if y is not None], rel=1e-12
                ), (name, column)
            else:
                assert a == b, (name, column)


def test_realistic_volume_rerun_gives_identical_bytes(synthetic_root: DataRoot) -> None:
    settings = Settings(data_root=synthetic_root.base)
    runs = []
    for _ in range(3):
        build_features(synthetic_root, SYNTH_TARGET, settings)
        runs.append(partition_files(synthetic_root, SYNTH_TARGET.days()))
    changed = sorted({k for run in runs[1:] for k in run if run[k] != runs[0][k]})
    assert changed == [], f"{len(changed)} files changed between identical runs, e.g. {changed[:2]}"


def test_realistic_volume_n_days_equal_n_one_day_builds(synthetic_root: DataRoot) -> None:
    settings = Settings(data_root=synthetic_root.base)
    build_features(synthetic_root, SYNTH_TARGET, settings)
    at_once = partition_files(synthetic_root, SYNTH_TARGET.days())
    for day in SYNTH_TARGET.days():
        build_features(synthetic_root, SYNTH_TARGET.single(day), settings)
    one_by_one = partition_files(synthetic_root, SYNTH_TARGET.days())
    changed = sorted(k for k in at_once if one_by_one[k] != at_once[k])
    assert changed == [], f"{len(changed)} files differ, e.g. {changed[:2]}"


def _parquet_only(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if k.endswith(".parquet")}


@pytest.mark.parametrize("dependents", [True, False])
def test_a_day_arriving_late_rebuilds_the_days_after_it(
    synthetic_root: DataRoot, tmp_path: Path, dependents: bool
) -> None:
    """Days built out of order end like one build of the whole range, because later days are rebuilt.

    Without ``dependents`` the later days keep windows that miss the late day: the test shows the
    difference, so it can fail.
    """
    settings = Settings(data_root=synthetic_root.base)
    build_features(synthetic_root, SYNTH_TARGET, settings)
    reference = _parquet_only(partition_files(synthetic_root, SYNTH_TARGET.days()))

    copy = DataRoot(str(tmp_path / "data"))
    shutil.copytree(synthetic_root.base, copy.base)
    shutil.rmtree(Path(copy.base) / FEATURES_LAYER)
    late = SYNTH_TARGET.start + dt.timedelta(days=2)
    curated = Path(copy.partition_path("curated", "trips", late))
    held = tmp_path / "held"
    curated.rename(held)
    # the days around the late one are built first, without it ...
    build_features(copy, Interval(SYNTH_TARGET.start, late), settings, dependents=dependents)
    after = build_features(
        copy, Interval(late + dt.timedelta(days=1), SYNTH_TARGET.end), settings, dependents=dependents
    )
    assert after["rebuilt_later_days"] == []
    # ... then it arrives and is built alone
    held.rename(curated)
    summary = build_features(copy, SYNTH_TARGET.single(late), settings, dependents=dependents)
    later = [d.isoformat() for d in SYNTH_TARGET.days() if d > late]
    rebuilt = _parquet_only(partition_files(copy, SYNTH_TARGET.days()))
    if dependents:
        assert summary["rebuilt_later_days"] == later
        assert rebuilt == reference
    else:
        assert summary["rebuilt_later_days"] == []
        stale = sorted({k.split("/")[1] for k in reference if rebuilt[k] != reference[k]})
        assert stale == later
