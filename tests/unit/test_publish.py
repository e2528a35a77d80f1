"""publish without GX: a day never validated is refused; publish never imports great_expectations.

The tests that validate first (real GX) are in tests/integration/test_publish.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ml_tasks.publish import AccountingError, publish
from ml_tasks.storage import DataRoot
from ml_tasks.transform import transform
from tests.unit.validation.trip_rows import DAY, ONE_DAY, settings, trips, write_raw


def test_refuses_a_day_that_was_never_validated(tmp_path: Path) -> None:
    root = DataRoot(str(tmp_path))
    write_raw(root, trips(3))
    transform(root, ONE_DAY, settings(tmp_path))
    with pytest.raises(
        AccountingError, match=r"dt=2024-05-01: no validation report .*run `ml-tasks validate`"
    ):
        publish(root, ONE_DAY, settings(tmp_path))
    assert not root.exists(root.partition_path("curated", "trips", DAY))


def test_publish_does_not_import_great_expectations() -> None:
    # publish runs in its own pod/subprocess: it must not pay GX's multi-second import
    code = "import sys, ml_tasks.publish, ml_tasks.validation; print('great_expectations' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip() == "False"
