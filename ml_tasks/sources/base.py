"""The source protocol shared by every extractor."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import pyarrow as pa

from ml_tasks.errors import FlywheelError
from ml_tasks.intervals import Interval


class SourceError(FlywheelError, RuntimeError):
    """A source that cannot deliver the requested interval (unreachable, malformed, misconfigured)."""


@dataclass
class SourceBatch:
    """A chunk of rows in the canonical raw schema, plus notes for the manifest."""

    table: pa.Table
    missing_optional: tuple[str, ...] = ()
    extra_columns: tuple[str, ...] = ()
    notes: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Source(Protocol):
    """Something that yields canonical raw trips for a data interval.

    ``server_side_filter``: True when the source is asked only for the interval (an API ``$where``, a
    SQL ``WHERE``, a generator): then every row it returns is attributed to the interval, and rows whose
    timestamp falls outside it are quarantined downstream as the source's fault. False for sources that
    hold other intervals too (files): rows of other intervals are skipped and counted.
    """

    name: str
    server_side_filter: bool

    def read(self, interval: Interval) -> Iterator[SourceBatch]:
        """Yield the interval's rows in bounded batches, in a deterministic order."""
        ...

    def describe(self, interval: Interval) -> dict[str, Any]:
        """The manifest ``inputs`` entry: locator (URI / dataset / query), content hashes where known.

        Secrets (tokens, passwords) never appear here.
        """
        ...
