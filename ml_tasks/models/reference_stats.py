"""``reference_stats.json`` read back: the fields monitoring relies on, checked field by field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ml_tasks.storage import parse_contract_file

FORMAT_VERSION = 1


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class NumericColumn(_Open):
    kind: Literal["numeric"]
    count: int
    null_count: int
    min: float | None
    max: float | None
    mean: float | None
    std: float | None


class CategoricalColumn(_Open):
    kind: Literal["categorical"]
    count: int
    null_count: int
    distinct: int
    values: list[tuple[Any, int]]  # [value, count], most frequent first
    truncated: bool


class ReferenceInputs(_Open):
    categorical: list[str]
    numeric: list[str]


class ReferenceStats(_Open):
    """The statistics the data-quality scan and the drift test compare the current rows with."""

    format_version: int
    inputs: ReferenceInputs
    rows: int
    sample_rows: int
    seed: int
    columns: dict[str, Annotated[NumericColumn | CategoricalColumn, Field(discriminator="kind")]]
    score: NumericColumn
    sample_sha256: str | None = None
    training_set_uri: str | None = None

    @model_validator(mode="after")
    def _every_input_has_statistics(self) -> ReferenceStats:
        for kind, names in (("categorical", self.inputs.categorical), ("numeric", self.inputs.numeric)):
            for name in names:
                column = self.columns.get(name)
                if column is None or column.kind != kind:
                    raise ValueError(f"input {name!r} has no {kind} statistics in 'columns'")
        return self


class _Versioned(_Open):
    format_version: Any = None


def read_reference_stats(path: Path) -> tuple[Any, dict[str, Any] | None]:
    """The file's ``format_version`` and, when it is :data:`FORMAT_VERSION`, the checked statistics.

    Raises:
        ContractFileError: invalid JSON, or a field missing or mistyped (names the file and the field).
    """
    text = path.read_bytes()
    version = parse_contract_file(_Versioned, text, str(path)).format_version
    if version != FORMAT_VERSION:
        return version, None
    parse_contract_file(ReferenceStats, text, str(path))
    stats: dict[str, Any] = json.loads(text)
    return version, stats
