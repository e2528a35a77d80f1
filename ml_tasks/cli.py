"""``ml-tasks``: one subcommand per pipeline step. The argv is the contract.

The same argv runs in a test, as a local subprocess launched by a DAG, and as the command of a
Kubernetes pod. Logs go to stderr; each subcommand ends by printing ONE JSON line on stdout.
Heavy libraries are imported inside the commands, so ``ml-tasks --help`` stays fast.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from ml_tasks.jsonout import emit

app = typer.Typer(
    name="ml-tasks",
    help="Flywheel pipeline steps. Each prints one JSON summary line on stdout.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Start = Annotated[
    str, typer.Option("--start", help="Interval start: a local date or ISO datetime (inclusive).")
]
End = Annotated[
    str | None,
    typer.Option(
        "--end", help="Interval end: a local date or ISO datetime (exclusive; default start + 1 day)."
    ),
]
DataRootOpt = Annotated[
    str | None, typer.Option("--data-root", help="Override FLYWHEEL_DATA_ROOT (folder or URI).")
]


class StepError(Exception):
    """Raised by steps for an expected failure: reported as one clear line, exit status 1."""


def _settings(data_root: str | None, **overrides: Any) -> Any:
    from ml_tasks.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if data_root:
        values["data_root"] = data_root
    return Settings(**values)


def _root(settings: Any) -> Any:
    from ml_tasks.storage import DataRoot

    return DataRoot(settings.resolved_data_root())


def _interval(start: str, end: str | None, settings: Any) -> Any:
    from ml_tasks.intervals import make_interval

    return make_interval(start, end, settings.timezone)


def _parse_options(pairs: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--option expects key=value, got {pair!r}")
        options[key.strip().replace("-", "_")] = value
    return options


@app.command()
def extract(
    start: Start,
    end: End = None,
    source: Annotated[str, typer.Option(help="Source: synthetic | file | chicago | postgres.")] = "synthetic",
    uri: Annotated[
        list[str] | None,
        typer.Option(help="file: path, URI or glob (repeatable). CSV, Parquet or JSON (lines or array)."),
    ] = None,
    mapping: Annotated[
        str | None, typer.Option(help="file: column layout, 'portal' (API names) or 'tfx' (TFX sample).")
    ] = None,
    dataset_id: Annotated[
        str | None, typer.Option(help="chicago: dataset id (default: chosen by year, wrvz-psew / ajtu-isnz).")
    ] = None,
    table: Annotated[str | None, typer.Option(help="postgres: table name (schema.table).")] = None,
    query: Annotated[
        str | None,
        typer.Option(help="postgres: SQL with :start and :end bind parameters (instead of --table)."),
    ] = None,
    trips_per_day: Annotated[int | None, typer.Option(help="synthetic: trips per day.")] = None,
    drift_from: Annotated[
        str | None, typer.Option(help="synthetic: ISO date from which the drift scenario applies.")
    ] = None,
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="Extra source option key=value (repeatable).")
    ] = None,
    data_root: DataRootOpt = None,
) -> None:
    """Extract one interval from a source into raw/trips/dt=YYYY-MM-DD partitions."""
    from ml_tasks.extract import extract as run
    from ml_tasks.sources import get_source

    settings = _settings(data_root, synthetic_trips_per_day=trips_per_day, synthetic_drift_from=drift_from)
    options: dict[str, Any] = _parse_options(option or [])
    for key, value in {
        "uri": uri,
        "mapping": mapping,
        "dataset_id": dataset_id,
        "table": table,
        "query": query,
    }.items():
        if value:
            options[key] = value
    src = get_source(source, settings, options)
    emit(run(_root(settings), src, _interval(start, end, settings)))


@app.command()
def transform(start: Start, end: End = None, data_root: DataRootOpt = None) -> None:
    """Type, derive and de-duplicate raw partitions into staging/trips/dt=YYYY-MM-DD."""
    from ml_tasks.transform import transform as run

    settings = _settings(data_root)
    emit(run(_root(settings), _interval(start, end, settings), settings))


@app.command()
def validate(
    start: Start,
    end: End = None,
    max_reject_rate: Annotated[
        float | None, typer.Option(help="Fail the batch above this rejected share (default from settings).")
    ] = None,
    allow_empty: Annotated[
        bool | None, typer.Option("--allow-empty/--no-allow-empty", help="Accept days with no trips.")
    ] = None,
    max_fare: Annotated[float | None, typer.Option(help="Reject fares above this (default 1000).")] = None,
    data_root: DataRootOpt = None,
) -> None:
    """Validate staged partitions (GX suite): accepted rows staged, rejects to quarantine/, reports/."""
    from ml_tasks.validation import validate as run

    settings = _settings(
        data_root, max_reject_rate=max_reject_rate, allow_empty=allow_empty, max_fare=max_fare
    )
    emit(run(_root(settings), _interval(start, end, settings), settings))


@app.command()
def publish(start: Start, end: End = None, data_root: DataRootOpt = None) -> None:
    """Check row accounting and move accepted rows into curated/trips/dt=YYYY-MM-DD."""
    from ml_tasks.publish import publish as run

    settings = _settings(data_root)
    emit(run(_root(settings), _interval(start, end, settings), settings))


def _expected_errors() -> tuple[type[BaseException], ...]:
    from pydantic import ValidationError

    from ml_tasks.intervals import IntervalError
    from ml_tasks.schema import SchemaError
    from ml_tasks.sources.base import SourceError
    from ml_tasks.storage import PartitionError

    errors: list[type[BaseException]] = [
        StepError, IntervalError, SchemaError, SourceError, PartitionError, ValidationError,
    ]  # fmt: skip
    try:
        from ml_tasks.validation import ValidationFailed

        errors.append(ValidationFailed)
    except ImportError:  # pragma: no cover - during bootstrap only
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: logs to stderr, one clear line and exit 1 on expected errors."""
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app(args=argv, standalone_mode=False)
    except typer.Abort:
        sys.exit(130)
    except Exception as exc:
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        if isinstance(exc, _expected_errors()):
            print(f"ml-tasks: error: {exc}", file=sys.stderr)
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
