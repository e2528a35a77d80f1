"""What lineage reads back from files other steps wrote: a partition's manifest, a monitoring decision.

Reader views: only the fields the walk follows are typed (anything else is kept as written), so a corrupt
file fails with a one-line, field-level :class:`~ml_tasks.storage.ContractFileError` naming the file.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Discriminator, Tag

from ml_tasks.storage import parse_contract_file


class _Record(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    def as_written(self) -> dict[str, Any]:
        """The entry as the step wrote it (fields it did not write stay absent)."""
        return self.model_dump(exclude_unset=True)


class OutputRecord(_Record):
    """A file the partition holds (``volatile`` outputs of a report carry no sha256)."""

    uri: str | None = None
    sha256: str | None = None

    @property
    def name(self) -> str | None:
        return self.uri.rsplit("/", 1)[-1] if self.uri else None


class PartitionInput(_Record):
    """A partition the step read (:func:`ml_tasks.storage.input_record`), with its files' sha256."""

    uri: str
    files: dict[str, str]
    role: str | None = None


class ModelRecord(_Record):
    """The model version a prediction partition was scored with."""

    name: str
    version: str
    run_id: str | None = None
    onnx_sha256: str | None = None
    feature_service: str | None = None


class ModelInput(_Record):
    model: ModelRecord


class ReferenceRecord(_Record):
    """A monitoring run's drift reference, stored with a model version (``models:/<name>/<version>``)."""

    uri: str = ""


class ReferenceInput(_Record):
    reference: ReferenceRecord


class SourceInput(_Record):
    """What extract read from its source (no files to follow): the end of the chain."""


def _input_kind(entry: Any) -> str:
    if isinstance(entry, dict):
        if "model" in entry:
            return "model"
        if "reference" in entry:
            return "reference"
        if "uri" in entry and "files" in entry:
            return "partition"
    return "source"


InputRecord = Annotated[
    Annotated[ModelInput, Tag("model")]
    | Annotated[ReferenceInput, Tag("reference")]
    | Annotated[PartitionInput, Tag("partition")]
    | Annotated[SourceInput, Tag("source")],
    Discriminator(_input_kind),
]


class ManifestRecord(_Record):
    """``_manifest.json`` of a partition (written by :class:`ml_tasks.storage.Manifest`)."""

    dataset: str
    partition: str
    step: str
    inputs: list[InputRecord] = []
    outputs: list[OutputRecord] = []
    row_counts: dict[str, Any] = {}
    params: dict[str, Any] = {}
    code_version: str | None = None

    def files(self) -> dict[str, str]:
        """File name -> sha256 of the outputs that have both."""
        return {o.name: o.sha256 for o in self.outputs if o.name and o.sha256}


class DriftRecord(_Record):
    drift_share: float | None = None


class DecisionRecord(_Record):
    """``decision.json`` of a monitoring partition (:func:`ml_tasks.monitoring.policy.decide`)."""

    verdict: str
    retrain: bool
    drift: DriftRecord = DriftRecord()


def read_manifest(text: str | bytes, where: str) -> ManifestRecord:
    """The manifest ``where`` (its JSON ``text``); raises ContractFileError naming the file and field."""
    return parse_contract_file(ManifestRecord, text, where)


def read_decision(text: str | bytes, where: str) -> DecisionRecord:
    """The monitoring decision ``where``; raises ContractFileError naming the file and field."""
    return parse_contract_file(DecisionRecord, text, where)
