"""The data root and the one rule for serving files from it: relative, no ``..``, resolved inside the root."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlparse


class PathRefused(ValueError):
    """A requested path that is absolute or climbs out of the data root."""


class PathMissing(PathRefused):
    """A well-formed path inside the data root that names nothing."""


def data_root() -> Path | None:
    """The local data root (``FLYWHEEL_DATA_ROOT``); None when unset or an object-store URI."""
    value = os.environ.get("FLYWHEEL_DATA_ROOT", "").strip()
    if not value or ("://" in value and not value.startswith("file://")):
        return None
    return Path(unquote(urlparse(value).path) if value.startswith("file://") else value).resolve()


def resolve_under(root: Path, relative: str) -> Path:
    """``root / relative`` for an existing file or folder strictly inside ``root`` (symlinks resolved)."""
    pure = PurePosixPath(relative)
    if not relative or pure.is_absolute() or relative.startswith(("/", "\\")) or ":" in pure.parts[0]:
        raise PathRefused(f"{relative!r}: only paths relative to the data root are served")
    if ".." in relative.replace("\\", "/").split("/"):
        raise PathRefused(f"{relative!r}: '..' is not allowed")
    target = (root / pure).resolve()
    if target != root and not target.is_relative_to(root):
        raise PathRefused(f"{relative!r}: resolves outside the data root")
    if not target.exists():
        raise PathMissing(f"{relative!r}: no such file or folder under the data root")
    return target


def relative_to_root(root: Path, uri: str) -> str | None:
    """The data-root-relative path of a local path or ``file://`` URI under ``root``, else None."""
    if "://" in uri and not uri.startswith("file://"):
        return None
    path = Path(unquote(urlparse(uri).path) if uri.startswith("file://") else uri)
    if not path.is_absolute():
        return None
    path = path.resolve()
    if path == root or not path.is_relative_to(root):
        return None
    return path.relative_to(root).as_posix()
