"""Finding 7: what a killed writer leaves beside a partition is swept by the partition's next successful
write; a live writer's staging is never touched (its lock is held, docs/reliability.md)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa

from ml_tasks.storage import DataRoot, Manifest
from tests.reliability._kill import PAUSED, leftovers

SCHEMA = pa.schema([("x", pa.int64())])


def _write(root: DataRoot, path: str, n: int) -> None:
    root.write_table(path, pa.table({"x": list(range(n))}, schema=SCHEMA), SCHEMA, Manifest("d/s", "p", "t"))


def test_a_dead_writers_staging_and_moved_aside_partition_are_swept(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    path = root.partition_path("raw", "trips", "2024-01-01")
    _write(root, path, 3)
    # what a writer killed by an older version left: a staging folder and a partition moved aside, no lock
    parent = Path(path).parent
    (parent / ".staging-dt=2024-01-01-0123456789ab").mkdir()
    (parent / ".staging-dt=2024-01-01-0123456789ab" / "part-00000.parquet").write_bytes(b"half")
    (parent / "dt=2024-01-01.old-ba9876543210").mkdir()
    (parent / "dt=2024-01-01.old-ba9876543210" / "_manifest.json").write_text("{}")
    old = time.time() - 7 * 3600  # past STALE_WRITER_SECONDS: without a lock only age tells
    for p in parent.rglob("*"):
        os.utime(p, (old, old))
    assert root.list_partitions("raw", "trips") == ["2024-01-01"]  # the moved-aside one is no partition

    _write(root, path, 4)

    assert leftovers(tmp_path) == []
    assert root.read_partition(path).num_rows == 4


LIVE_WRITER = textwrap.dedent(
    """
    import pyarrow as pa, sys
    from ml_tasks.storage import DataRoot, Manifest
    root = DataRoot(sys.argv[1])
    schema = pa.schema([("x", pa.int64())])
    root.write_table(root.partition_path("raw", "trips", "2024-01-01"), pa.table({"x": [1]}, schema=schema),
                     schema, Manifest("d/s", "p", "t"))
    """
)


def test_a_live_writer_is_left_alone_and_swept_once_dead(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    path = root.partition_path("raw", "trips", "2024-01-01")
    proc = subprocess.Popen(
        [sys.executable, "-c", LIVE_WRITER, str(tmp_path)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "FLYWHEEL_PAUSE_AT": "staged"},
    )
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith(PAUSED)
        live = leftovers(tmp_path)
        assert len(live) == 2 and live[1].endswith(".lock")  # its staging folder and its lock

        _write(root, path, 2)  # a concurrent writer of the same partition (fresh: no age would save it)
        assert leftovers(tmp_path) == live  # the live writer's lock is held: not swept
        assert root.read_partition(path).num_rows == 2
    finally:
        proc.kill()
        proc.wait(timeout=30)

    _write(root, path, 5)  # the next write after it died
    assert leftovers(tmp_path) == []
    assert root.read_partition(path).num_rows == 5
