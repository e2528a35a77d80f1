"""Where validation reads and writes, and the accounting file publish reads back (no great_expectations).

::

    staging/trips/dt=D/              input (transform)
    staging/trips_accepted/dt=D/     rows that passed every rule (written only when the batch passes)
    quarantine/trips/dt=D/           rejected rows + reject_reason ("code;code", rule order)
    reports/validation/dt=D/         accounting.json, gx_result.json, data_docs.html, index.html
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ml_tasks.contract import ACCOUNTING_FILE, VALIDATION_REPORTS
from ml_tasks.storage import DataRoot, parse_contract_file

VERDICT_PASSED = "passed"
VERDICT_FAILED = "failed"


def partition(root: DataRoot, where: tuple[str, str], day: dt.date) -> str:
    """The partition path of ``day`` in one of the layouts above."""
    return root.partition_path(where[0], where[1], day)


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class AccountingFailure(_Open):
    """One failed batch rule of the day."""

    rule: str
    message: str


class AccountingInput(_Open):
    """The staging partition validation read: file name -> sha256."""

    files: dict[str, str]


class AccountingFile(_Open):
    """A file validation wrote."""

    uri: str
    sha256: str


class AccountingOutput(_Open):
    """A partition validation wrote (accepted or quarantine) and its files."""

    uri: str
    files: list[AccountingFile]


class Accounting(_Open):
    """``accounting.json`` as publish reads it back (the fields it relies on; the rest is kept as is)."""

    partition: str
    verdict: Literal["passed", "failed"]
    failures: list[AccountingFailure]
    rows_in: int
    accepted: int | None
    quarantined: int | None
    by_reason: dict[str, int]
    max_reject_rate: float
    inputs: dict[Literal["staging"], AccountingInput]
    outputs: dict[str, AccountingOutput] = Field(default_factory=dict)


def read_accounting(root: DataRoot, day: dt.date) -> Accounting:
    """The day's ``accounting.json``.

    Raises:
        FileNotFoundError: validation has not written it.
        ContractFileError: it is corrupt (names the file and the field).
    """
    path = f"{partition(root, VALIDATION_REPORTS, day)}/{ACCOUNTING_FILE}"
    with root.fs.open_input_stream(path) as stream:
        text = stream.read()
    return parse_contract_file(Accounting, text, root.uri(path))
