"""CSV files of the file source: the header, then bounded batches typed to the canonical schema.

Malformed lines and values that are not valid UTF-8 become rows whose ``_parse_errors`` says what was
wrong, at their position among the file's records (see ``docs/ingest.md``).
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from ml_tasks.schema import ColumnMapping, to_canonical
from ml_tasks.sources.base import SourceBatch, SourceError
from ml_tasks.sources.file_inputs import InputFile


@dataclass(frozen=True)
class _BadLine:
    """A CSV record pyarrow could not split into the header's number of fields."""

    number: int  # pyarrow's row number: header = 1, blank lines not counted
    expected: int
    actual: int
    text: str


@dataclass(frozen=True)
class _Typed:
    table: pa.Table
    missing_optional: tuple[str, ...]
    extra_columns: tuple[str, ...]


def string_table(names: list[str], rows: int) -> pa.Table:
    return pa.table([pa.nulls(rows, pa.string()) for _ in names], names=names)


#: a Unicode noncharacter standing, while parsing, for bytes the file's encoding cannot decode
_MARK = "\U0010fffe"
_MARK_ERRORS = "flywheel-mark"


def _mark(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    return _MARK, error.end


class _Transcoded(io.RawIOBase):
    """The bytes of ``stream`` in ``encoding`` as UTF-8, undecodable bytes as :data:`_MARK`.

    pyarrow then always parses valid UTF-8, whatever the file's encoding or damage: a malformed line
    reaches the invalid-row handler as text (pyarrow fails the whole file when it cannot decode one),
    and an undecodable value is found per value, vectorised (:func:`_as_text`). Python's incremental
    codecs run at hundreds of MB/s; pyarrow's own ``ReadOptions.encoding`` uses them too.
    """

    def __init__(self, stream: Any, encoding: str) -> None:
        super().__init__()
        self._stream = stream
        self._decoder = codecs.getincrementaldecoder(encoding)(errors=_MARK_ERRORS)
        self._buffer = b""
        self._at = 0
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, target: Any) -> int:
        while self._at >= len(self._buffer) and not self._eof:
            chunk = self._stream.read(1 << 20)
            self._eof = not chunk
            self._buffer = self._decoder.decode(chunk, final=self._eof).encode("utf-8")
            self._at = 0
        n = min(len(target), len(self._buffer) - self._at)
        target[:n] = self._buffer[self._at : self._at + n]
        self._at += n
        return n


def _as_text(column: pa.Array) -> tuple[pa.Array, np.ndarray[Any, np.dtype[np.bool_]] | None]:
    """The column as text with U+FFFD for undecodable bytes, and a mask of those values (None: none)."""
    text = column.cast(pa.string())
    marked = pc.match_substring(text, _MARK)
    if not pc.any(marked).as_py():
        return text, None
    fixed = pc.replace_substring(text, _MARK, "\ufffd")
    return fixed, pc.fill_null(marked, False).to_numpy(zero_copy_only=False)


def merge_parse_errors(table: pa.Table, notes: pa.Array) -> pa.Table:
    """Prefix ``_parse_errors`` with ``notes`` (row-aligned, null where there is nothing to add)."""
    index = table.schema.get_field_index("_parse_errors")
    current = table.column(index).combine_chunks()
    joined = pc.binary_join_element_wise(notes, current, ";")
    merged = pc.if_else(pc.is_null(notes), current, pc.if_else(pc.is_null(current), notes, joined))
    return table.set_column(index, "_parse_errors", merged)


def csv_header(f: InputFile, encoding: str, delimiter: str) -> list[str]:
    """Column names from the first line."""
    try:
        with f.arrow_fs().open_input_stream(f.path, compression="detect") as stream:
            head = b""
            while b"\n" not in head:
                chunk = stream.read(1 << 16)
                if not chunk:
                    break
                head += chunk
    except OSError as exc:  # a truncated or corrupt compressed file
        raise SourceError(f"file source: cannot read CSV file {f.uri}: {type(exc).__name__}: {exc}") from exc
    if not head.strip():
        raise SourceError(f"file source: {f.uri} is empty (no header line)")
    line = head.split(b"\n", 1)[0].rstrip(b"\r")
    codec = "utf-8-sig" if encoding == "utf-8" else encoding
    try:
        text = line.decode(codec)
    except UnicodeDecodeError as exc:
        raise SourceError(f"file source: the header line of {f.uri} is not valid {encoding}: {exc}") from exc
    names = [n.strip() for n in next(csv.reader([text], delimiter=delimiter))]
    if not any(names):
        raise SourceError(f"file source: the first line of {f.uri} is blank; a header line is required")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or "" in names:
        raise SourceError(f"file source: the header of {f.uri} has empty or repeated column names: {dupes}")
    return names


def read_csv(
    f: InputFile,
    names: list[str],
    *,
    delimiter: str,
    encoding: str,
    block_bytes: int,
    batch_rows: int,
    mapping: ColumnMapping,
    source: str,
    stats: dict[str, int],
) -> Iterator[SourceBatch]:
    """Every record of the CSV file ``f`` (header ``names``) in batches of about ``batch_rows`` rows.

    Raises:
        SourceError: the file cannot be parsed at all.
    """
    bad_lines: list[_BadLine] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        if row.number is None:  # only known with use_threads=False (set below)
            return "error"
        text = row.text[:120].replace(_MARK, "\ufffd")
        bad_lines.append(_BadLine(row.number, row.expected_columns, row.actual_columns, text))
        return "skip"

    read_options = pacsv.ReadOptions(
        column_names=names,
        skip_rows=1,
        # serial parsing: pyarrow reports the row number of a malformed line only then, and the
        # row number is what puts the quarantined line back at its position among the rows
        use_threads=False,
        block_size=block_bytes,
    )
    parse_options = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid)
    # binary, then text in _as_text: undecodable bytes are found per value, never failing a block
    convert_options = pacsv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.binary()), strings_can_be_null=False
    )
    arrow_fs = f.arrow_fs()
    valid_seen = 0  # valid rows consumed so far
    bad_done = 0  # bad lines already placed (and dropped from bad_lines, which holds only the rest)
    stats.update(malformed_csv_lines=0, invalid_utf8_values=0)
    try:
        codecs.lookup_error(_MARK_ERRORS)
    except LookupError:
        codecs.register_error(_MARK_ERRORS, _mark)
    note_name = "invalid_utf8" if codecs.lookup(encoding).name == "utf-8" else f"invalid_{encoding}"
    try:
        with arrow_fs.open_input_stream(f.path, compression="detect") as stream:
            reader = pacsv.open_csv(
                io.BufferedReader(_Transcoded(stream, encoding), 1 << 20),
                read_options=read_options,
                parse_options=parse_options,
                convert_options=convert_options,
            )
            empty = True
            pending: list[pa.RecordBatch] = []
            pending_rows = 0
            while True:
                try:
                    block: pa.RecordBatch | None = reader.read_next_batch()
                except StopIteration:
                    block = None
                if block is not None:
                    # small blocks parse fastest; typing runs on batches of about batch_rows
                    pending.append(block)
                    pending_rows += block.num_rows
                    if pending_rows < batch_rows:
                        continue
                rows = pa.Table.from_batches(pending, reader.schema).combine_chunks() if pending else None
                n = pending_rows
                pending, pending_rows = [], 0
                # A bad line goes before valid row k, k = its record index minus the bad lines before
                # it; those with k < valid_seen + n lie within these rows (or before their last one).
                take = 0
                while take < len(bad_lines) and (
                    block is None or bad_lines[take].number - 2 - (bad_done + take) < valid_seen + n
                ):
                    take += 1
                placed = bad_lines[:take]
                if n or placed:
                    table = _csv_rows(
                        rows, names, placed, (valid_seen, bad_done), mapping, source, stats, note_name
                    )
                    valid_seen += n
                    bad_done += take
                    del bad_lines[:take]
                    empty = False
                    yield from sliced(table.table, table.missing_optional, table.extra_columns, batch_rows)
                if block is None:
                    break
            if empty:  # header only: zero rows, but the columns are still checked
                typed = to_canonical(string_table(names, 0), source, mapping)
                yield SourceBatch(typed.table, typed.missing_optional, typed.extra_columns)
    except pa.ArrowInvalid as exc:
        raise SourceError(f"file source: cannot parse CSV file {f.uri}: {exc}") from exc
    except OSError as exc:  # a truncated or corrupt compressed file, an I/O error
        raise SourceError(f"file source: cannot read CSV file {f.uri}: {type(exc).__name__}: {exc}") from exc
    stats["malformed_csv_lines"] = bad_done


def _csv_rows(
    batch: pa.Table | None,
    names: list[str],
    placed: list[_BadLine],
    seen: tuple[int, int],
    mapping: ColumnMapping,
    source: str,
    stats: dict[str, int],
    note_name: str,
) -> _Typed:
    """Type one block's valid rows plus the malformed lines that sit among them, in file order.

    ``seen``: valid rows and bad lines already placed before this block.
    """
    valid_seen, bad_done = seen
    n = 0 if batch is None else batch.num_rows
    columns: list[pa.Array] = []
    errors: list[str | None] = [None] * n
    any_error = False
    for i, name in enumerate(names):
        if batch is None:
            columns.append(pa.nulls(0, pa.string()))
            continue
        text, bad = _as_text(batch.column(i).chunk(0) if batch.num_rows else pa.array([], pa.binary()))
        columns.append(text)
        if bad is not None:
            any_error = True
            stats["invalid_utf8_values"] = stats.get("invalid_utf8_values", 0) + int(bad.sum())
            for row in np.flatnonzero(bad):
                note = f"{note_name} in column {name}"
                errors[row] = note if errors[row] is None else f"{errors[row]};{note}"
    table = pa.table(columns, names=names)
    # positions: valid row i (global index valid_seen + i) comes after every bad line with k <= it
    ks = np.array([b.number - 2 - (bad_done + j) for j, b in enumerate(placed)], dtype=np.int64)
    valid_idx = np.arange(valid_seen, valid_seen + n, dtype=np.int64)
    positions = valid_idx + bad_done + np.searchsorted(ks, valid_idx, side="right")
    if placed:
        any_error = True
        table = pa.concat_tables([table, string_table(names, len(placed))])
        positions = np.concatenate([positions, np.array([b.number - 2 for b in placed], dtype=np.int64)])
        errors.extend(
            f"malformed_csv_line: expected {b.expected} fields, got {b.actual} at row {b.number}"
            f" (header = row 1): {b.text}"
            for b in placed
        )
    typed = to_canonical(table, source, mapping)
    out = typed.table.set_column(
        typed.table.schema.get_field_index("_source_row"), "_source_row", pa.array(positions, pa.int64())
    )
    if any_error:
        out = merge_parse_errors(out, pa.array(errors, pa.string()))
    if placed:
        out = out.take(pc.sort_indices(out["_source_row"]))
    return _Typed(out, typed.missing_optional, typed.extra_columns)


def sliced(
    table: pa.Table, missing: tuple[str, ...], extra: tuple[str, ...], batch_rows: int
) -> Iterator[SourceBatch]:
    """``table`` in batches of ``batch_rows`` rows (one empty batch for an empty table)."""
    for start in range(0, max(table.num_rows, 1), batch_rows):
        yield SourceBatch(table.slice(start, batch_rows), missing, extra)
