"""The prediction and monitoring commands as the DAGs run them (subprocesses, one JSON line each).

On a copy of the shared ``pipeline_root``: ``resolve-model`` pins the champion; two ``predict --shard`` runs
and one ``predict-commit`` write a day (the taxi_batch_predict fan-out), equal row for row to the
unsharded ``predict`` of the same day in a second copy; ``monitor`` loads the reference logged with the
registered version (through MLflow, not the bundle folder) and writes its reports and decision;
``lineage`` prints the chain; an alias that does not exist is a clear error, or ``version: null`` with
``--allow-missing`` (how the DAG skips without a champion).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import run_cli
from tests.integration._pipeline import MODEL, PipelineRoot, day

pytestmark = [pytest.mark.timeout(1200)]


@pytest.fixture(scope="module")
def copies(
    pipeline_root: PipelineRoot, tmp_path_factory: pytest.TempPathFactory
) -> tuple[PipelineRoot, PipelineRoot]:
    base = tmp_path_factory.mktemp("predict_cli")
    return pipeline_root.copy_to(base / "sharded"), pipeline_root.copy_to(base / "whole")


def test_sharded_commands_equal_the_unsharded_one_and_monitor_reads_the_registered_reference(
    copies: tuple[PipelineRoot, PipelineRoot],
) -> None:
    sharded, whole = copies
    target = day(5)
    interval = ["--start", target.isoformat(), "--end", (target + dt.timedelta(days=1)).isoformat()]
    resolved = run_cli("resolve-model", "--model", f"{MODEL}@champion", env=sharded.env)
    assert resolved["version"] == sharded.version and resolved["name"] == MODEL
    pinned = ["--model", f"{MODEL}/{resolved['version']}", "--shards", "2", "--run-key", "manual__1"]
    shards = [run_cli("predict", *interval, "--shard", str(i), *pinned, env=sharded.env) for i in range(2)]
    commit = run_cli("predict-commit", *interval, *pinned, env=sharded.env)
    one = run_cli("predict", *interval, "--model", f"{MODEL}@champion", env=whole.env)
    assert sum(s["rows"] for s in shards) == commit["rows"] == one["rows"] > 1000
    # the Asset-event contract: the interval and the partitions written
    assert commit["interval"] == {"start": interval[1], "end": interval[3]}
    assert [p["dt"] for p in commit["partitions"]] == [target.isoformat()]
    rel = Path("predictions") / MODEL / f"dt={target}" / "part-00000.parquet"
    assert (sharded.data_root / rel).read_bytes() == (whole.data_root / rel).read_bytes()
    table = pq.read_table(sharded.data_root / rel, columns=["model_version", "score"])
    assert set(table.column("model_version").to_pylist()) == {sharded.version}

    summary = run_cli("monitor", *interval, env=sharded.env)
    folder = sharded.data_root / "monitoring" / MODEL / f"dt={target}"
    decision = json.loads((folder / "decision.json").read_text())
    assert summary["decision"] == decision
    assert decision["model"]["version"] == sharded.version
    assert decision["verdict"] in {"drift", "no_drift", "performance"}
    assert decision["drift"]["tested_columns"], decision["drift"]
    assert (folder / "drift_report.html").stat().st_size > 10_000
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert any("models:/" in json.dumps(i) for i in manifest["inputs"]), manifest["inputs"]

    text = run_cli("lineage", str(sharded.data_root / rel.parent), "--json", env=sharded.env)
    assert text["summary"]["raw_partitions"] and not text["summary"]["mismatches"], text["summary"]
    assert text["summary"]["ok"] is True, text["summary"]


def test_no_such_alias_is_a_clear_error_or_null_with_allow_missing(
    copies: tuple[PipelineRoot, PipelineRoot],
) -> None:
    sharded, _ = copies
    missing = run_cli("resolve-model", "--model", f"{MODEL}@nobody", "--allow-missing", env=sharded.env)
    assert missing["version"] is None and "nobody" in missing["reason"]
    failed = run_cli("predict", "--start", day(6).isoformat(), "--model", f"{MODEL}@nobody", env=sharded.env,
                     check=False)  # fmt: skip
    assert failed["returncode"] == 1
    assert "ml-tasks: error:" in failed["stderr"] and "nobody" in failed["stderr"]
    assert "Traceback" not in failed["stderr"]
    assert not (sharded.data_root / "predictions" / MODEL / f"dt={day(6)}").exists()
