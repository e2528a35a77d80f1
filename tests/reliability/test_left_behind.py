"""Finding 8: ``ml-tasks features-pending`` lists the curated days whose feature partitions are missing or
older than their curated data; taxi_features plans them with its events
(tests/dags/test_taxi_features_planning)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_cli


def _ingest(start: str, end: str, trips: int) -> None:
    window = ["--start", start, "--end", end]
    run_cli("extract", *window, "--trips-per-day", str(trips))
    for step in ("transform", "validate", "publish"):
        run_cli(step, *window)


def test_missing_and_stale_days_are_pending_until_built(data_root: Path) -> None:
    _ingest("2024-02-01", "2024-02-04", 200)
    assert run_cli("features-pending")["intervals"] == [{"start": "2024-02-01", "end": "2024-02-04"}]

    run_cli("build-features", "--start", "2024-02-01")  # an event for 1 February only; the others were lost
    pending = run_cli("features-pending")
    assert (pending["curated_days"], pending["missing"], pending["stale"]) == (
        3,
        ["2024-02-02", "2024-02-03"],
        [],
    )
    assert pending["intervals"] == [{"start": "2024-02-02", "end": "2024-02-04"}]

    run_cli("build-features", "--start", "2024-02-02", "--end", "2024-02-04")
    assert run_cli("features-pending")["intervals"] == []

    _ingest("2024-02-02", "2024-02-03", 150)  # 2 February republished with other trips
    pending = run_cli("features-pending")
    assert (pending["missing"], pending["stale"]) == ([], ["2024-02-02"])

    run_cli("build-features", "--start", "2024-02-02")
    assert run_cli("features-pending")["intervals"] == []
