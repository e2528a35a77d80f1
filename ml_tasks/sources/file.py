"""Trips from files: CSV, Parquet or JSON at local paths, globs, folders or any fsspec URI.

A file holds trips of many intervals, so this source yields every row it has (``server_side_filter`` is
False) and extract skips and counts the rows of other intervals. Nothing is dropped silently: unreadable
records become rows with ``_parse_errors``; unreadable files are a :class:`SourceError` naming the file.
"""

from __future__ import annotations

import codecs
import hashlib
import logging
import time
from collections.abc import Iterator
from typing import Any, Self

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ml_tasks.intervals import Interval
from ml_tasks.schema import MAPPINGS, ColumnMapping, to_canonical
from ml_tasks.settings import Settings
from ml_tasks.sources._options import check_known, opt_int, opt_list, opt_str
from ml_tasks.sources.base import SourceBatch, SourceError
from ml_tasks.sources.file_csv import csv_header, merge_parse_errors, read_csv
from ml_tasks.sources.file_inputs import InputFile, resolve_files, strip_compression

log = logging.getLogger(__name__)

DEFAULT_BATCH_ROWS = 50_000
DEFAULT_BLOCK_BYTES = 1 << 20  # measured: 1 MiB blocks parse 2x faster than 8 MiB
_TAB_NAMES = {"\\t": "\t", "tab": "\t"}  # a tab is awkward to pass on a command line
_KNOWN_OPTIONS = {"uri", "mapping", "format", "batch_rows", "delimiter", "encoding", "block_bytes"}


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
    def columns(self, f: InputFile) -> list[str]:
        """The file's column names (CSV header, Parquet schema, JSON object keys)."""
        if f.uri not in self._columns:
            if f.fmt == "csv":
                self._columns[f.uri] = csv_header(f, self.encoding, self.delimiter_of(f))
            elif f.fmt == "parquet":
                with f.arrow_fs().open_input_file(f.path) as handle:
                    self._columns[f.uri] = list(_parquet(handle, f).schema_arrow.names)
            else:
                self._columns[f.uri] = self._json_keys(f)
        return self._columns[f.uri]

    def delimiter_of(self, f: InputFile) -> str:
        """The configured delimiter, else a tab for ``.tsv`` files and a comma for the others."""
        if self.delimiter:
            return self.delimiter
        return "\t" if strip_compression(f.path).endswith(".tsv") else ","

    def mapping_name(self, f: InputFile) -> str:
        """The layout of ``f``: the configured mapping, else TFX when it looks like the TFX sample."""
        if self.mapping:
            return self.mapping
        names = set(self.columns(f))
        return "tfx" if "pickup_latitude" in names and "trip_id" not in names else "portal"

    def sha256(self, f: InputFile) -> str:
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
                batches = read_csv(
                    f,
                    self.columns(f),
                    delimiter=self.delimiter_of(f),
                    encoding=self.encoding,
                    block_bytes=self.block_bytes,
                    batch_rows=self.batch_rows,
                    mapping=mapping,
                    source=source,
                    stats=stats,
                )
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

    # Parquet ----------------------------------------------------------------------------------
    def _read_parquet(self, f: InputFile, mapping: ColumnMapping, source: str) -> Iterator[SourceBatch]:
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
    def _duck(self, f: InputFile) -> tuple[duckdb.DuckDBPyConnection, str]:
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

    def _json_keys(self, f: InputFile) -> list[str]:
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

    def _read_json(self, f: InputFile, mapping: ColumnMapping, source: str) -> Iterator[SourceBatch]:
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
                    out = merge_parse_errors(
                        out, notes.combine_chunks() if isinstance(notes, pa.ChunkedArray) else notes
                    )
                offset += batch.num_rows
                yield SourceBatch(out, typed.missing_optional, typed.extra_columns)
        except duckdb.Error as exc:
            raise SourceError(f"file source: cannot read JSON file {f.uri}: {exc}") from exc
        finally:
            con.close()


def _delimiter(value: str | None) -> str | None:
    return _TAB_NAMES.get(value, value) if value else None


def _parquet(handle: Any, f: InputFile) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(handle)
    except (pa.ArrowInvalid, OSError) as exc:
        raise SourceError(f"file source: cannot read Parquet file {f.uri}: {exc}") from exc


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _sql_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
