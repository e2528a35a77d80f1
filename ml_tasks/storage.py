"""Partitioned storage under a data root (a local folder or any pyarrow/fsspec URI).

Partitions ``<root>/<layer>/<dataset>/dt=YYYY-MM-DD/`` are written whole and replaced atomically; one
without its ``_manifest.json`` (written last) is incomplete and readers refuse it (``docs/architecture.md``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pydantic

import ml_tasks
from ml_tasks import writers
from ml_tasks.contract import MANIFEST
from ml_tasks.errors import FlywheelError

log = logging.getLogger(__name__)

PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "write_statistics": True}
_M = TypeVar("_M")


class PartitionError(FlywheelError, RuntimeError):
    """A partition that is missing, incomplete, or cannot be written."""


class ContractFileError(FlywheelError, ValueError):
    """A JSON file written by a step that does not hold what its contract says (names the file and field)."""


_ADAPTERS: dict[type[Any], pydantic.TypeAdapter[Any]] = {}


def _adapter(model: type[Any]) -> pydantic.TypeAdapter[Any]:
    """One validator per contract type (building one costs milliseconds)."""
    if model not in _ADAPTERS:
        _ADAPTERS[model] = pydantic.TypeAdapter(model)
    return _ADAPTERS[model]


def parse_contract_file(model: type[_M], text: str | bytes, where: str) -> _M:
    """``text`` (the JSON file ``where``) parsed into ``model``.

    Raises:
        ContractFileError: invalid JSON or a field that is missing or mistyped, in one line naming the file.
    """
    try:
        value: _M = _adapter(model).validate_json(text)
        return value
    except pydantic.ValidationError as exc:
        problems = [
            (f"field {'.'.join(str(p) for p in e['loc'])!r}: " if e["loc"] else "") + e["msg"]
            for e in exc.errors(include_url=False)
        ]
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        detail = "; ".join(problems[:3]).replace("\n", " ")
        raise ContractFileError(f"{where} is corrupt: {detail}{more}") from exc


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit of the working tree when available."""
    env = os.environ.get("FLYWHEEL_CODE_VERSION")
    if env:
        return env
    version = ml_tasks.__version__
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+g{sha}" if sha else version


def file_sha256(path: str | Path, fs: pafs.FileSystem | None = None) -> str:
    """Hex sha256 of a file: a local path, or ``path`` on the pyarrow filesystem ``fs``."""
    if fs is None:
        with Path(path).open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    with fs.open_input_file(str(path)) as stream:  # as stored: no decompression by file extension
        return hashlib.file_digest(stream, "sha256").hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, payload: Any) -> None:
    """``payload`` as indented, key-sorted JSON, written atomically."""
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


@dataclass
class Manifest:
    """Lineage record of one partition: what went in, what came out, which code made it."""

    dataset: str
    partition: str
    step: str
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    row_counts: dict[str, int] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    code_version: str = field(default_factory=code_version)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True, default=str) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str = MANIFEST) -> Manifest:
        """The manifest ``where``; a corrupt file is a ContractFileError naming the file and field."""
        return parse_contract_file(cls, text, where)


class DataRoot:
    """Paths and atomic partition I/O under one data root."""

    def __init__(self, root: str) -> None:
        if "://" in root:
            self.fs, base = pafs.FileSystem.from_uri(root)
            self.uri_prefix = root.split("://", 1)[0] + "://"
        else:
            self.fs, base = pafs.LocalFileSystem(), str(Path(root).expanduser().resolve())
            self.uri_prefix = ""
        self.base = base.rstrip("/")
        self.root = root

    # -- paths -----------------------------------------------------------------------------
    def dataset_path(self, layer: str, dataset: str) -> str:
        return f"{self.base}/{layer}/{dataset}"

    def partition_path(self, layer: str, dataset: str, day: dt.date | str) -> str:
        key = day.isoformat() if isinstance(day, dt.date) else day
        return f"{self.dataset_path(layer, dataset)}/dt={key}"

    def uri(self, path: str) -> str:
        """A path on this root as a URI other processes can open."""
        return f"{self.uri_prefix}{path}"

    # -- reading ---------------------------------------------------------------------------
    def exists(self, path: str) -> bool:
        return bool(self.fs.get_file_info(path).type != pafs.FileType.NotFound)

    def read_manifest(self, path: str) -> Manifest:
        target = f"{path}/{MANIFEST}"
        if not self.exists(target):
            raise PartitionError(f"partition {self.uri(path)} is missing or incomplete (no {MANIFEST})")
        with self.fs.open_input_stream(target) as stream:
            return Manifest.from_json(stream.read(), f"{MANIFEST} of {self.uri(path)}")

    def parquet_files(self, path: str) -> list[str]:
        self.read_manifest(path)  # refuses incomplete partitions
        selector = pafs.FileSelector(path, recursive=False)
        return sorted(i.path for i in self.fs.get_file_info(selector) if i.path.endswith(".parquet"))

    def read_partition(
        self,
        path: str,
        schema: pa.Schema | None = None,
        columns: Sequence[str] | None = None,
        dictionary: Sequence[str] = (),
    ) -> pa.Table:
        """The whole partition as one table (partitions are one day: small enough); only ``columns`` if
        given. ``dictionary``: columns to read dictionary-encoded (repetitive strings: a fraction of the
        memory)."""
        files = self.parquet_files(path)
        if not files:
            return (schema or pa.schema([])).empty_table()
        names = list(columns) if columns is not None else None
        tables = [
            pq.read_table(
                f, filesystem=self.fs, schema=schema, columns=names, read_dictionary=list(dictionary) or None
            )
            for f in files
        ]
        return pa.concat_tables(tables)

    def iter_batches(self, path: str, batch_size: int = 65_536) -> Iterator[pa.RecordBatch]:
        for name in self.parquet_files(path):
            yield from pq.ParquetFile(self.fs.open_input_file(name)).iter_batches(batch_size=batch_size)

    def list_partitions(self, layer: str, dataset: str) -> list[str]:
        """Partition keys (``YYYY-MM-DD``) of complete partitions, sorted."""
        base = self.dataset_path(layer, dataset)
        if not self.exists(base):
            return []
        infos = self.fs.get_file_info(pafs.FileSelector(base, recursive=False))
        keys = [
            i.base_name.removeprefix("dt=")
            for i in infos
            if i.type == pafs.FileType.Directory
            and i.base_name.startswith("dt=")
            and writers.OLD_INFIX not in i.base_name  # a partition moved aside by a writer that died
        ]
        return sorted(k for k in keys if self.exists(f"{base}/dt={k}/{MANIFEST}"))

    # -- writing ---------------------------------------------------------------------------
    @contextmanager
    def write_partition(self, path: str) -> Iterator[PartitionWriter]:
        """Stage a partition in a temporary sibling, then move it into place whole.

        On an exception nothing at ``path`` changes and the staging directory is removed. After a
        successful write, leftovers of earlier writers of the same partition that died (killed between
        staging and commit) are swept: :meth:`sweep_leftovers`.
        """
        parent, name = path.rsplit("/", 1)
        token = uuid.uuid4().hex[:12]
        staging = f"{parent}/{writers.STAGING_PREFIX}{name}-{token}"
        self.fs.create_dir(parent, recursive=True)
        with writers.writer_lock(self.fs, parent, name, token):
            self.fs.create_dir(staging, recursive=True)
            writer = PartitionWriter(self, staging, path)
            try:
                yield writer
                writer.close()
                if writer.manifest is None:
                    raise PartitionError(f"partition {self.uri(path)}: no manifest was set before commit")
                writers.pause_point("staged")
                with self.fs.open_output_stream(f"{staging}/{MANIFEST}") as out:
                    out.write(writer.manifest.to_json().encode())
                writers.pause_point("manifest-staged")
            except BaseException:
                writer.abort()
                self.fs.delete_dir(staging)
                raise
            self._replace(staging, path, token)
        self.sweep_leftovers(path)

    def leftovers(self, path: str) -> list[str]:
        """Staging, moved-aside and lock entries beside the partition ``path`` (any writer's, live or not)."""
        parent, name = path.rsplit("/", 1)
        return writers.leftovers(self.fs, parent, name) if self.exists(parent) else []

    def sweep_leftovers(self, path: str) -> list[str]:
        """Delete the leftovers of dead writers of the partition ``path`` (``ml_tasks.writers.sweep``)."""
        parent, name = path.rsplit("/", 1)
        swept = writers.sweep(self.fs, parent, name)
        if swept:
            log.info("swept %d leftover(s) of dead writers of %s: %s", len(swept), self.uri(path),
                     [e.rsplit("/", 1)[1] for e in swept])  # fmt: skip
        return swept

    def _replace(self, staging: str, final: str, token: str) -> None:
        if isinstance(self.fs, pafs.LocalFileSystem):
            # two renames: the old partition is moved aside, never half-overwritten
            old = None
            if Path(final).exists():
                old = f"{final}{writers.OLD_INFIX}{token}"
                Path(final).rename(old)
                writers.pause_point("moved-aside")
            Path(staging).rename(final)
            writers.pause_point("committed")
            if old:
                self.fs.delete_dir(old)
            return
        # Object stores have no atomic directory rename. Readers trust a partition only when its
        # _manifest.json exists, so the old manifest goes first and the new one arrives last.
        if self.exists(f"{final}/{MANIFEST}"):
            self.fs.delete_file(f"{final}/{MANIFEST}")
        if self.exists(final):
            self.fs.delete_dir(final)
        manifest = f"{staging}/{MANIFEST}"
        held = f"{staging}.{MANIFEST}"
        self.fs.move(manifest, held)
        self.fs.move(staging, final)
        self.fs.move(held, f"{final}/{MANIFEST}")

    def write_table(self, path: str, table: pa.Table, schema: pa.Schema, manifest: Manifest) -> Manifest:
        """Write ``table`` as the whole partition at ``path`` (atomically) with ``manifest``.

        The manifest's ``outputs`` are filled in from the written file; an empty table still gets a
        file carrying ``schema``.
        """
        with self.write_partition(path) as writer:
            writer.write(table, schema=schema)
            writer.write_empty(schema)
            writer.manifest = replace(manifest, outputs=writer.outputs())
        return writer.manifest

    def write_json(self, path: str, payload: Mapping[str, Any] | list[Any]) -> None:
        """Write one JSON document atomically (temp file + move)."""
        parent = path.rsplit("/", 1)[0]
        self.fs.create_dir(parent, recursive=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with self.fs.open_output_stream(tmp) as out:
            out.write((json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n").encode())
        self.fs.move(tmp, path)

    def read_json(self, path: str) -> Any:
        with self.fs.open_input_stream(path) as stream:
            return json.loads(stream.read().decode())


class PartitionWriter:
    """Writes parquet parts of one staged partition; set :attr:`manifest` before the block ends."""

    def __init__(self, root: DataRoot, staging: str, final: str) -> None:
        self.root = root
        self.staging = staging
        self.final = final
        self.manifest: Manifest | None = None
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._files: list[str] = []

    def write(self, data: pa.Table | pa.RecordBatch, schema: pa.Schema | None = None) -> None:
        """Append rows (in order) to the partition's single parquet file."""
        table = data if isinstance(data, pa.Table) else pa.Table.from_batches([data])
        if schema is not None:
            table = table.select(schema.names).cast(schema)
        if self._writer is None:
            self._schema = table.schema
            name = f"{self.staging}/part-00000.parquet"
            self._writer = pq.ParquetWriter(name, table.schema, filesystem=self.root.fs, **PARQUET_OPTIONS)
            self._files.append(name)
        self._writer.write_table(table)
        self.rows += table.num_rows

    def write_empty(self, schema: pa.Schema) -> None:
        """Make sure the partition has a (possibly empty) file carrying its schema."""
        if self._writer is None:
            self.write(schema.empty_table())

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def abort(self) -> None:
        try:
            self.close()
        except Exception:  # the staging dir is deleted anyway; the original error matters
            log.exception("closing an aborted partition writer failed")

    def outputs(self) -> list[dict[str, Any]]:
        """Final URIs, sizes and hashes of the data files (call after writing)."""
        self.close()
        result = []
        for staged in self._files:
            name = staged.rsplit("/", 1)[1]
            result.append(
                {
                    "uri": self.root.uri(f"{self.final}/{name}"),
                    "sha256": file_sha256(staged, self.root.fs),
                    "rows": self.rows,
                }
            )
        return result


def input_record(root: DataRoot, path: str) -> dict[str, Any]:
    """A manifest ``inputs`` entry for a partition: its URI and the hashes of its files."""
    manifest = root.read_manifest(path)
    return {
        "uri": root.uri(path),
        "files": {o["uri"].rsplit("/", 1)[1]: o["sha256"] for o in manifest.outputs},
        "rows": manifest.row_counts,
    }
