"""The ``ml-tasks`` Typer app and what its subcommands share: interval and data-root options, settings."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ml_tasks.errors import FlywheelError

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


class StepError(FlywheelError):
    """Raised by steps for an expected failure: reported as one clear line, exit status 1."""


def make_settings(data_root: str | None, **overrides: Any) -> Any:
    from ml_tasks.settings import Settings

    values = {k: v for k, v in overrides.items() if v is not None}
    if data_root:
        values["data_root"] = data_root
    return Settings(**values)


def open_root(settings: Any) -> Any:
    from ml_tasks.storage import DataRoot

    return DataRoot(settings.resolved_data_root())


def parse_interval(start: str, end: str | None, settings: Any) -> Any:
    from ml_tasks.intervals import make_interval

    return make_interval(start, end, settings.timezone)


def parse_options(pairs: list[str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"--option expects key=value, got {pair!r}")
        options[key.strip().replace("-", "_")] = value
    return options
