"""Trips from files: CSV, Parquet or JSON at local paths, globs, folders or any fsspec URI.

A file holds trips of many intervals, so this source yields every row it has (``server_side_filter``
is False) and extract skips and counts the rows of other intervals.

Nothing is dropped silently. A CSV line with the wrong number of fields and a value that is not valid
UTF-8 become rows whose ``_parse_errors`` says what was wrong (validation quarantines them); their
``_source_row`` is their position among the file's records, so row counts add up. Only blank lines are
not records. Input that cannot be read at all (an empty file, broken JSON, a corrupt Parquet file, a
pattern that matches nothing) is a :class:`SourceError` naming the file.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Self

import duckdb
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem

from ml_tasks.intervals import Interval
from ml_tasks.schema import MAPPINGS, ColumnMapping, to_canonical
from ml_tasks.settings import Settings
from ml_tasks.sources._options import check_known, opt_int, opt_list, opt_str
from ml_tasks.sources.base import SourceBatch, SourceError

log = logging.getLogger(__name__)

FORMATS: dict[str, str] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".parquet": "parquet",
    ".parq": "parquet",
    ".pq": "parquet",
    ".json": "json",
    ".jsonl": "json",
    ".ndjson": "json",
}
# pyarrow decompresses these transparently (compression="detect"); DuckDB does the same for JSON.
COMPRESSION_SUFFIXES: tuple[str, ...] = (".gz", ".bz2", ".zst", ".zstd", ".lz4")
DEFAULT_BATCH_ROWS = 50_000
DEFAULT_BLOCK_BYTES = 1 << 20  # measured: 1 MiB blocks parse 2x faster than 8 MiB
_GLOB_CHARS = "*?["
_TAB_NAMES = {"\\t": "\t", "tab": "\t"}  # a tab is awkward to pass on a command line
_KNOWN_OPTIONS = {"uri", "mapping", "format", "batch_rows", "delimiter", "encoding", "block_bytes"}


@dataclass(frozen=True)
class _File:
    """One resolved input file."""

    uri: str  # what is reported (absolute local path, or protocol://path)
    path: str  # the path inside ``fs``
    fs: fsspec.AbstractFileSystem
    size: int
    fmt: str

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def arrow_fs(self) -> pafs.FileSystem:
        if self.is_local:
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))


@dataclass(frozen=True)
class _BadLine:
    """A CSV record pyarrow could not split into the header's number of fields."""

    number: int  # pyarrow's row number: header = 1, blank lines not counted
    expected: int
    actual: int
    text: str


def _strip_compression(name: str) -> str:
    lower = name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if lower.endswith(suffix):
            return lower[: -len(suffix)]
    return lower


def _format_of(path: str, override: str | None) -> str | None:
    if override:
        return override
    name = _strip_compression(path.rsplit("/", 1)[-1])
    dot = name.rfind(".")
    return FORMATS.get(name[dot:]) if dot >= 0 else None


def resolve_files(uris: list[str], fmt: str | None = None) -> list[_File]:
    """Expand paths, globs and folders into a sorted, de-duplicated list of files.

    Raises:
        SourceError: a URI that matches nothing, or a file whose format cannot be told.
    """
    files: list[_File] = []
    seen: set[str] = set()
    for uri in uris:
        try:
            fs, path = fsspec.core.url_to_fs(uri)
        except (ImportError, ValueError) as exc:
            raise SourceError(f"cannot open {uri!r}: {exc}") from exc
        if any(ch in path for ch in _GLOB_CHARS):
            matches = sorted(p for p in fs.glob(path) if fs.isfile(p))
            if not matches:
                raise SourceError(f"file source: pattern {uri!r} matches no file")
        elif fs.isdir(path):
            # a folder: its data files, skipping markers such as _SUCCESS, _manifest.json, .staging-*
            matches = sorted(
                p
                for p in fs.find(path)
                if _format_of(p, fmt) and not p.rsplit("/", 1)[-1].startswith(("_", "."))
            )
            if not matches:
                raise SourceError(f"file source: folder {uri!r} holds no CSV, Parquet or JSON file")
        elif fs.isfile(path):
            matches = [path]
        else:
            raise SourceError(f"file source: {uri!r} does not exist")
        for match in matches:
            shown = match if isinstance(fs, LocalFileSystem) else fs.unstrip_protocol(match)
            if shown in seen:
                continue
            seen.add(shown)
            kind = _format_of(match, fmt)
            if kind is None:
                raise SourceError(
                    f"file source: cannot tell the format of {shown!r} from its name;"
                    " pass --option format=csv|parquet|json"
                )
            files.append(_File(shown, match, fs, int(fs.size(match)), kind))
    return files


class FileSource:
    """Trips read from CSV / Parquet / JSON files (see the module docstring)."""

    name = "file"
    server_side_filter = False

    def __init__(
        self,
        uris: list[str],
        *,
        mapping: str | None = None,
        fmt: str | None = None,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        delimiter: str | None = None,
        encoding: str = "utf-8",
        block_bytes: int = DEFAULT_BLOCK_BYTES,
    ) -> None:
        if not uris:
            raise SourceError("file source needs at least one --uri (path, glob or URI)")
        if mapping not in (None, "auto", *MAPPINGS):
            raise SourceError(f"unknown mapping {mapping!r}; choose one of {sorted(MAPPINGS)} or 'auto'")
        if fmt not in (None, "csv", "parquet", "json"):
            raise SourceError(f"unknown file format {fmt!r}; choose csv, parquet or json")
        if delimiter is not None and len(delimiter) != 1:
            raise SourceError(f"option 'delimiter' must be one character, got {delimiter!r}")
        try:
            codec = codecs.lookup(encoding).name
        except LookupError:
            raise SourceError(f"unknown encoding {encoding!r}") from None
        self.uris = list(uris)
        self.mapping = None if mapping == "auto" else mapping
        self.batch_rows = batch_rows
        self.delimiter = delimiter
        self.encoding = codec
        self.block_bytes = block_bytes
        self.files = resolve_files(self.uris, fmt)
        self._columns: dict[str, list[str]] = {}
        self._hashes: dict[str, str] = {}

    @classmethod
    def from_options(cls, settings: Settings, options: dict[str, Any]) -> Self:
        """Build from CLI options: ``uri`` (list), ``mapping``, ``format``, ``batch_rows``, ``delimiter``."""
        del settings  # nothing here depends on settings; the signature is the sources' contract
        check_known(options, "file", _KNOWN_OPTIONS)
        return cls(
            opt_list(options, "uri"),
            mapping=opt_str(options, "mapping"),
            fmt=opt_str(options, "format"),
            batch_rows=opt_int(options, "batch_rows", DEFAULT_BATCH_ROWS, minimum=1),
            delimiter=_delimiter(opt_str(options, "delimiter")),
            encoding=opt_str(options, "encoding", "utf-8") or "utf-8",
            block_bytes=opt_int(options, "block_bytes", DEFAULT_BLOCK_BYTES, minimum=1 << 12),
        )

    # -- metadata ------------------------------------------------------------------------------
    def columns(self, f: _File) -> list[str]:
        """The file's column names (CSV header, Parquet schema, JSON object keys)."""
        if f.uri not in self._columns:
            if f.fmt == "csv":
                self._columns[f.uri] = self._csv_header(f)
            elif f.fmt == "parquet":
                with f.arrow_fs().open_input_file(f.path) as handle:
                    self._columns[f.uri] = list(_parquet(handle, f).schema_arrow.names)
            else:
                self._columns[f.uri] = self._json_keys(f)
        return self._columns[f.uri]

    def delimiter_of(self, f: _File) -> str:
        """The configured delimiter, else a tab for ``.tsv`` files and a comma for the others."""
        if self.delimiter:
            return self.delimiter
        return "\t" if _strip_compression(f.path).endswith(".tsv") else ","

    def mapping_name(self, f: _File) -> str:
        """The layout of ``f``: the configured mapping, else TFX when it looks like the TFX sample."""
        if self.mapping:
            return self.mapping
        names = set(self.columns(f))
        return "tfx" if "pickup_latitude" in names and "trip_id" not in names else "portal"

    def sha256(self, f: _File) -> str:
        """Hash of the stored bytes (compressed files are hashed as stored)."""
        if f.uri not in self._hashes:
            digest = hashlib.sha256()
            with f.arrow_fs().open_input_file(f.path) as handle:
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
            self._hashes[f.uri] = digest.hexdigest()
        return self._hashes[f.uri]

    def describe(self, interval: Interval) -> dict[str, Any]:
        """Files with sizes and content hashes, and the column layout used for each."""
        del interval  # the same files serve every interval
        mappings = {f.uri: self.mapping_name(f) for f in self.files}
        distinct = sorted(set(mappings.values()))
        return {
            "source": "file",
            "uris": self.uris,
            "files": [
                {
                    "uri": f.uri,
                    "bytes": f.size,
                    "sha256": self.sha256(f),
                    "format": f.fmt,
                    "mapping": mappings[f.uri],
                }
                for f in self.files
            ],
            "mapping": distinct[0] if len(distinct) == 1 else mappings,
        }

    # -- reading -------------------------------------------------------------------------------
    def read(self, interval: Interval) -> Iterator[SourceBatch]:
        """Every row of every file, file by file in sorted order, in bounded batches."""
        del interval  # files are not filtered here: extract counts rows of other intervals
        for f in self.files:
            started = time.perf_counter()
            mapping = MAPPINGS[self.mapping_name(f)]
            source = f"file:{f.uri}"
            rows = 0
            stats: dict[str, int] = {}
            if f.fmt == "csv":
                batches = self._read_csv(f, mapping, source, stats)
            elif f.fmt == "parquet":
                batches = self._read_parquet(f, mapping, source)
            else:
                batches = self._read_json(f, mapping, source)
            for batch in batches:
                rows += batch.table.num_rows
                yield batch
            log.info(
                "file %s (%s, mapping %s): %d rows in %.2f s%s",
                f.uri, f.fmt, self.mapping_name(f), rows, time.perf_counter() - started,
                "".join(f", {v} {k}" for k, v in stats.items() if v),
            )  # fmt: skip

    def _sliced(
        self, table: pa.Table, missing: tuple[str, ...], extra: tuple[str, ...]
    ) -> Iterator[SourceBatch]:
        for start in range(0, max(table.num_rows, 1), self.batch_rows):
            yield SourceBatch(table.slice(start, self.batch_rows), missing, extra)

    # CSV --------------------------------------------------------------------------------------
    def _csv_header(self, f: _File) -> list[str]:
        """Column names from the first line."""
        with f.arrow_fs().open_input_stream(f.path, compression="detect") as stream:
            head = b""
            while b"\n" not in head:
                chunk = stream.read(1 << 16)
                if not chunk:
                    break
                head += chunk
        if not head.strip():
            raise SourceError(f"file source: {f.uri} is empty (no header line)")
        line = head.split(b"\n", 1)[0].rstrip(b"\r")
        codec = "utf-8-sig" if self.encoding == "utf-8" else self.encoding
        try:
            text = line.decode(codec)
        except UnicodeDecodeError as exc:
            raise SourceError(
                f"file source: the header line of {f.uri} is not valid {self.encoding}: {exc}"
            ) from exc
        names = [n.strip() for n in next(csv.reader([text], delimiter=self.delimiter_of(f)))]
        if not any(names):
            raise SourceError(f"file source: the first line of {f.uri} is blank; a header line is required")
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes or "" in names:
            raise SourceError(
                f"file source: the header of {f.uri} has empty or repeated column names: {dupes}"
            )
        return names

    def _read_csv(
        self, f: _File, mapping: ColumnMapping, source: str, stats: dict[str, int]
    ) -> Iterator[SourceBatch]:
        names = self.columns(f)
        bad_lines: list[_BadLine] = []

        def on_invalid(row: pacsv.InvalidRow) -> str:
            if row.number is None:  # only known with use_threads=False (set below)
                return "error"
            bad_lines.append(_BadLine(row.number, row.expected_columns, row.actual_columns, row.text[:120]))
            return "skip"

        read_options = pacsv.ReadOptions(
            column_names=names,
            skip_rows=1,
            # serial parsing: pyarrow reports the row number of a malformed line only then, and the
            # row number is what puts the quarantined line back at its position among the rows
            use_threads=False,
            block_size=self.block_bytes,
            encoding=self.encoding,
        )
        parse_options = pacsv.ParseOptions(delimiter=self.delimiter_of(f), invalid_row_handler=on_invalid)
        # binary first: invalid UTF-8 is then found per value instead of failing the whole block
        convert_options = pacsv.ConvertOptions(
            column_types=dict.fromkeys(names, pa.binary()), strings_can_be_null=False
        )
        arrow_fs = f.arrow_fs()
        valid_seen = 0  # valid rows consumed so far
        bad_done = 0  # bad lines already placed (and dropped from bad_lines, which holds only the rest)
        stats.update(malformed_csv_lines=0, invalid_utf8_values=0)
        try:
            with arrow_fs.open_input_stream(f.path, compression="detect") as stream:
                reader = pacsv.open_csv(
                    stream,
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
                        if pending_rows < self.batch_rows:
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
                        table = self._csv_rows(
                            rows, names, placed, valid_seen, bad_done, mapping, source, stats
                        )
                        valid_seen += n
                        bad_done += take
                        del bad_lines[:take]
                        empty = False
                        yield from self._sliced(table.table, table.missing_optional, table.extra_columns)
                    if block is None:
                        break
                if empty:  # header only: zero rows, but the columns are still checked
                    typed = to_canonical(_string_table(names, 0), source, mapping)
                    yield SourceBatch(typed.table, typed.missing_optional, typed.extra_columns)
        except pa.ArrowInvalid as exc:
            raise SourceError(f"file source: cannot parse CSV file {f.uri}: {exc}") from exc
        stats["malformed_csv_lines"] = bad_done

    def _csv_rows(
        self,
        batch: pa.Table | None,
        names: list[str],
        placed: list[_BadLine],
        valid_seen: int,
        bad_done: int,
        mapping: ColumnMapping,
        source: str,
        stats: dict[str, int],
    ) -> _Typed:
        """Type one block's valid rows plus the malformed lines that sit among them, in file order."""
        n = 0 if batch is None else batch.num_rows
        columns: list[pa.Array] = []
        errors: list[str | None] = [None] * n
        any_error = False
        for i, name in enumerate(names):
            if batch is None:
                columns.append(pa.nulls(0, pa.string()))
                continue
            text, bad = _as_utf8(batch.column(i).chunk(0) if batch.num_rows else pa.array([], pa.binary()))
            columns.append(text)
            if bad is not None:
                any_error = True
                stats["invalid_utf8_values"] = stats.get("invalid_utf8_values", 0) + int(bad.sum())
                for row in np.flatnonzero(bad):
                    note = f"invalid_utf8 in column {name}"
                    errors[row] = note if errors[row] is None else f"{errors[row]};{note}"
        table = pa.table(columns, names=names)
        # positions: valid row i (global index valid_seen + i) comes after every bad line with k <= it
        ks = np.array([b.number - 2 - (bad_done + j) for j, b in enumerate(placed)], dtype=np.int64)
        valid_idx = np.arange(valid_seen, valid_seen + n, dtype=np.int64)
        positions = valid_idx + bad_done + np.searchsorted(ks, valid_idx, side="right")
        if placed:
            any_error = True
            table = pa.concat_tables([table, _string_table(names, len(placed))])
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
            out = _merge_errors(out, pa.array(errors, pa.string()))
        if placed:
            out = out.take(pc.sort_indices(out["_source_row"]))
        return _Typed(out, typed.missing_optional, typed.extra_columns)

    # Parquet ----------------------------------------------------------------------------------
    def _read_parquet(self, f: _File, mapping: ColumnMapping, source: str) -> Iterator[SourceBatch]:
        offset = 0
        try:
            with f.arrow_fs().open_input_file(f.path) as handle:
                parquet = _parquet(handle, f)
                for batch in parquet.iter_batches(batch_size=self.batch_rows):
                    typed = to_canonical(pa.Table.from_batches([batch]), source, mapping, offset)
                    offset += batch.num_rows
                    yield SourceBatch(typed.table, typed.missing_optional, typed.extra_columns)
                if offset == 0:
                    typed = to_canonical(parquet.schema_arrow.empty_table(), source, mapping)
                    yield SourceBatch(typed.table, typed.missing_optional, typed.extra_columns)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SourceError(f"file source: cannot read Parquet file {f.uri}: {exc}") from exc

    # JSON -------------------------------------------------------------------------------------
    def _duck(self, f: _File) -> tuple[duckdb.DuckDBPyConnection, str]:
        """A DuckDB connection able to read ``f`` and the name to read it by."""
        if f.size == 0:
            raise SourceError(f"file source: {f.uri} is empty")
        con = duckdb.connect()
        # the progress bar would print on stdout, where the CLI prints its one JSON line
        con.execute("SET enable_progress_bar = false")
        if f.is_local:
            return con, f.path
        con.register_filesystem(f.fs)
        return con, f.uri

    def _json_keys(self, f: _File) -> list[str]:
        con, name = self._duck(f)
        try:
            rows = con.execute(
                "SELECT DISTINCT unnest(json_keys(json)) AS k FROM read_json_objects(?, format = 'auto')"
                " WHERE json_type(json) = 'OBJECT' ORDER BY k",
                [name],
            ).fetchall()
        except duckdb.Error as exc:
            raise SourceError(f"file source: cannot read JSON file {f.uri}: {exc}") from exc
        finally:
            con.close()
        return [str(r[0]) for r in rows]

    def _read_json(self, f: _File, mapping: ColumnMapping, source: str) -> Iterator[SourceBatch]:
        """JSON lines or one JSON array of objects; every value is read as text (objects as JSON)."""
        keys = self.columns(f)
        con, name = self._duck(f)
        try:
            # JSON pointers ("/key") address any key literally, whatever characters it holds
            exprs = [
                "CASE WHEN json_type(json) = 'OBJECT' THEN json ->> "
                + _sql_str("/" + k.replace("~", "~0").replace("/", "~1"))
                + " END AS "
                + _sql_ident(k)
                for k in keys
            ]
            # a non-object record (a bare number, a list) keeps its row, with its text in __not_object
            exprs.append("CASE WHEN json_type(json) <> 'OBJECT' THEN left(CAST(json AS VARCHAR), 120) END")
            sql = f"SELECT {', '.join(exprs)} FROM read_json_objects(?, format = 'auto')"
            reader = con.execute(sql, [name]).to_arrow_reader(self.batch_rows)
            offset = 0
            for batch in reader:
                if batch.num_rows == 0:
                    continue
                table = pa.Table.from_batches([batch])
                odd = table.column(table.num_columns - 1)
                table = table.remove_column(table.num_columns - 1)
                if not keys:
                    raise SourceError(
                        f"file source: JSON file {f.uri} holds records but no objects with keys"
                    )
                typed = to_canonical(table, source, mapping, offset)
                out = typed.table
                if odd.null_count < len(odd):
                    notes = pc.binary_join_element_wise("not_a_json_object: ", odd, "")
                    out = _merge_errors(
                        out, notes.combine_chunks() if isinstance(notes, pa.ChunkedArray) else notes
                    )
                offset += batch.num_rows
                yield SourceBatch(out, typed.missing_optional, typed.extra_columns)
        except duckdb.Error as exc:
            raise SourceError(f"file source: cannot read JSON file {f.uri}: {exc}") from exc
        finally:
            con.close()


@dataclass(frozen=True)
class _Typed:
    table: pa.Table
    missing_optional: tuple[str, ...]
    extra_columns: tuple[str, ...]


def _delimiter(value: str | None) -> str | None:
    return _TAB_NAMES.get(value, value) if value else None


def _parquet(handle: Any, f: _File) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(handle)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"file source: cannot read Parquet file {f.uri}: {exc}") from exc


def _string_table(names: list[str], rows: int) -> pa.Table:
    return pa.table([pa.nulls(rows, pa.string()) for _ in names], names=names)


def _as_utf8(column: pa.Array) -> tuple[pa.Array, np.ndarray[Any, np.dtype[np.bool_]] | None]:
    """The binary column as text, and a mask of the values that were not valid UTF-8 (None: all were).

    The fast path casts in C++ (which validates); only a column that fails is decoded value by value,
    with U+FFFD in place of the bad bytes so the row stays readable. (A zero-copy ``view`` was measured
    slower: DuckDB then typed the batch about 1.5x slower.)
    """
    try:
        return column.cast(pa.string()), None
    except pa.ArrowInvalid:
        pass
    values: list[str | None] = []
    bad = np.zeros(len(column), dtype=np.bool_)
    for i, raw in enumerate(column.to_pylist()):
        if raw is None:
            values.append(None)
            continue
        try:
            values.append(raw.decode("utf-8"))
        except UnicodeDecodeError:
            values.append(raw.decode("utf-8", "replace"))
            bad[i] = True
    return pa.array(values, pa.string()), bad


def _merge_errors(table: pa.Table, notes: pa.Array) -> pa.Table:
    """Prefix ``_parse_errors`` with ``notes`` (row-aligned, null where there is nothing to add)."""
    index = table.schema.get_field_index("_parse_errors")
    current = table.column(index).combine_chunks()
    joined = pc.binary_join_element_wise(notes, current, ";")
    merged = pc.if_else(pc.is_null(notes), current, pc.if_else(pc.is_null(current), notes, joined))
    return table.set_column(index, "_parse_errors", merged)


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
