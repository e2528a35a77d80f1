"""Trip sources. Each yields rows already typed into the canonical raw schema (``ml_tasks.schema``).

A source is looked up by name with :func:`get_source`; options come from CLI flags / settings.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ml_tasks.settings import Settings
from ml_tasks.sources.base import Source, SourceError

__all__ = ["SOURCES", "Source", "SourceError", "get_source"]


def _synthetic(settings: Settings, options: dict[str, Any]) -> Source:
    from ml_tasks.sources.synthetic import SyntheticSource

    return SyntheticSource.from_options(settings, options)


def _file(settings: Settings, options: dict[str, Any]) -> Source:
    from ml_tasks.sources.file import FileSource

    return FileSource.from_options(settings, options)


def _chicago(settings: Settings, options: dict[str, Any]) -> Source:
    from ml_tasks.sources.chicago import ChicagoSource

    return ChicagoSource.from_options(settings, options)


def _postgres(settings: Settings, options: dict[str, Any]) -> Source:
    from ml_tasks.sources.postgres import PostgresSource

    return PostgresSource.from_options(settings, options)


# Imports stay inside the factories: `ml-tasks extract --source file` never pays for the others.
SOURCES: dict[str, Callable[[Settings, dict[str, Any]], Source]] = {
    "synthetic": _synthetic,
    "file": _file,
    "chicago": _chicago,
    "postgres": _postgres,
}


def get_source(name: str, settings: Settings, options: dict[str, Any] | None = None) -> Source:
    """Build the source called ``name`` from ``options`` (CLI flags) and ``settings``."""
    try:
        factory = SOURCES[name]
    except KeyError:
        raise SourceError(f"unknown source {name!r}; choose one of {sorted(SOURCES)}") from None
    return factory(settings, dict(options or {}))
