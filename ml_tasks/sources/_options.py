"""Typed access to source options.

Options arrive from CLI flags (already typed: ``uri`` is a list) and from free ``--option key=value``
strings, so every accessor accepts both the typed value and its text form, and names the option in
its error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ml_tasks.sources.base import SourceError


def opt_str(options: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    """A string option; a one-element list (a repeatable flag) is accepted too."""
    value = options.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise SourceError(f"option {key!r} takes one value, got {len(value)}: {list(value)}")
        value = value[0]
    return str(value)


def opt_list(options: Mapping[str, Any], key: str) -> list[str]:
    """A list option: a list, or one string (comma-free: URIs may contain commas)."""
    value = options.get(key)
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    return [str(value)]


def opt_int(options: Mapping[str, Any], key: str, default: int, minimum: int | None = None) -> int:
    """An integer option (``50000`` or ``50_000``), at least ``minimum``."""
    value = options.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(str(value).replace("_", "")) if not isinstance(value, int) else value
    except ValueError:
        raise SourceError(f"option {key!r} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise SourceError(f"option {key!r} must be >= {minimum}, got {number}")
    return number


def opt_float(options: Mapping[str, Any], key: str, default: float, minimum: float | None = None) -> float:
    """A float option, at least ``minimum``."""
    value = options.get(key)
    if value is None or value == "":
        return default
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SourceError(f"option {key!r} must be a number, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise SourceError(f"option {key!r} must be >= {minimum}, got {number}")
    return number


def check_known(options: Mapping[str, Any], source: str, known: set[str]) -> None:
    """Reject options this source does not understand (a typo must not be ignored silently).

    The CLI passes every typed flag it has (``uri``, ``table``...) only when set, so a flag meant for
    another source is an error too.
    """
    unknown = sorted(k for k, v in options.items() if k not in known and v not in (None, "", [], ()))
    if unknown:
        raise SourceError(
            f"source {source!r} does not understand option(s) {unknown}; it knows {sorted(known)}"
        )
