"""Input files of the file source: paths, globs, folders or fsspec URIs resolved to files with a format."""

from __future__ import annotations

from dataclasses import dataclass

import fsspec
import pyarrow.fs as pafs
from fsspec.implementations.local import LocalFileSystem

from ml_tasks.sources.base import SourceError

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
_GLOB_CHARS = "*?["


@dataclass(frozen=True)
class InputFile:
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


def strip_compression(name: str) -> str:
    lower = name.lower()
    for suffix in COMPRESSION_SUFFIXES:
        if lower.endswith(suffix):
            return lower[: -len(suffix)]
    return lower


def format_of(path: str, override: str | None) -> str | None:
    if override:
        return override
    name = strip_compression(path.rsplit("/", 1)[-1])
    dot = name.rfind(".")
    return FORMATS.get(name[dot:]) if dot >= 0 else None


def resolve_files(uris: list[str], fmt: str | None = None) -> list[InputFile]:
    """Expand paths, globs and folders into a sorted, de-duplicated list of files.

    Raises:
        SourceError: a URI that matches nothing, or a file whose format cannot be told.
    """
    files: list[InputFile] = []
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
                if format_of(p, fmt) and not p.rsplit("/", 1)[-1].startswith(("_", "."))
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
            kind = format_of(match, fmt)
            if kind is None:
                raise SourceError(
                    f"file source: cannot tell the format of {shown!r} from its name;"
                    " pass --option format=csv|parquet|json"
                )
            files.append(InputFile(shown, match, fs, int(fs.size(match)), kind))
    return files
