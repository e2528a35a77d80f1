"""Where validation reads and writes (light: publish and tests import it without great_expectations).

::

    staging/trips/dt=D/              input (transform)
    staging/trips_accepted/dt=D/     rows that passed every rule (written only when the batch passes)
    quarantine/trips/dt=D/           rejected rows + reject_reason ("code;code", rule order)
    reports/validation/dt=D/         accounting.json, gx_result.json, data_docs.html, index.html
"""

from __future__ import annotations

import datetime as dt

from ml_tasks.storage import DataRoot

VERDICT_PASSED = "passed"
VERDICT_FAILED = "failed"


def partition(root: DataRoot, where: tuple[str, str], day: dt.date) -> str:
    """The partition path of ``day`` in one of the layouts above."""
    return root.partition_path(where[0], where[1], day)
