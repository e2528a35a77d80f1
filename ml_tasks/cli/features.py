"""Feature-store steps: feature-apply, build-features, materialize, training-set, online-features."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from ml_tasks.cli.app import (
    DataRootOpt,
    End,
    Start,
    app,
    make_settings,
    open_root,
    parse_interval,
)
from ml_tasks.contract import FEATURE_SERVICE
from ml_tasks.jsonout import emit

FeatureServiceOpt = Annotated[
    str, typer.Option("--feature-service", help="Feast feature service (one per model version).")
]


def open_store(settings: Any, check: bool = True) -> Any:
    from ml_tasks.features.store import check_registry, open_store

    handle = open_store(settings)
    if check:
        check_registry(handle)
    return handle


@app.command("feature-apply")
def feature_apply(
    check: Annotated[
        bool,
        typer.Option("--check", help="Only compare (feast plan): exit 1 when the registry is out of date."),
    ] = False,
    data_root: DataRootOpt = None,
) -> None:
    """Register the feature_repo/ declarations in the Feast registry (feast apply), or --check them."""
    from ml_tasks.features.store import apply_declarations, check_registry

    settings = make_settings(data_root)
    handle = open_store(settings, check=False)
    if check:
        check_registry(handle)
        emit({"step": "feature-apply", "check": True, "changes": [], **handle.describe()})
        return
    emit({"step": "feature-apply", **apply_declarations(handle)})


Dependents = Annotated[
    bool,
    typer.Option(
        "--dependents/--no-dependents",
        help="Also take the existing later days whose trailing windows include the interval (late data).",
    ),
]


@app.command("build-features")
def build_features(
    start: Start, end: End = None, dependents: Dependents = True, data_root: DataRootOpt = None
) -> None:
    """Trailing-window entity aggregates from curated trips into features/<view>/dt=YYYY-MM-DD."""
    from ml_tasks.features.build import build_features as run

    settings = make_settings(data_root)
    emit(run(open_root(settings), parse_interval(start, end, settings), settings, dependents))


@app.command("features-pending")
def features_pending(data_root: DataRootOpt = None) -> None:
    """Curated days whose feature partitions are missing or stale (taxi_features plans them too)."""
    from ml_tasks.features.pending import pending_features

    emit(pending_features(open_root(make_settings(data_root))))


@app.command()
def materialize(
    start: Start,
    end: End = None,
    view: Annotated[
        list[str] | None, typer.Option("--view", help="Feature view to load (repeatable; default all).")
    ] = None,
    batch_rows: Annotated[int | None, typer.Option(help="Rows per online write batch.")] = None,
    dependents: Dependents = True,
    data_root: DataRootOpt = None,
) -> None:
    """Load the interval's feature rows (latest per entity) into the Feast online store, in batches."""
    from ml_tasks.features.materialize import materialize as run

    settings = make_settings(data_root)
    handle = open_store(settings)
    emit(
        run(
            handle,
            open_root(settings),
            parse_interval(start, end, settings),
            settings,
            view,
            batch_rows,
            dependents,
        )
    )


@app.command("training-set")
def training_set(
    start: Start,
    end: End = None,
    feature_service: FeatureServiceOpt = FEATURE_SERVICE,
    name: Annotated[
        str | None, typer.Option(help="Snapshot name under training_sets/<service>/ (default START_END).")
    ] = None,
    data_root: DataRootOpt = None,
) -> None:
    """Point-in-time correct training snapshot of the window's trips (Feast historical features)."""
    from ml_tasks.features.training_set import build_training_set

    settings = make_settings(data_root)
    handle = open_store(settings)
    emit(
        build_training_set(
            handle, open_root(settings), parse_interval(start, end, settings), settings, feature_service, name
        )
    )


@app.command("online-features")
def online_features(
    entity: Annotated[
        list[str],
        typer.Option(
            "--entity", "-e", help="key=value of an entity row, e.g. pickup_community_area=8 (repeatable)."
        ),
    ],
    feature_service: FeatureServiceOpt = FEATURE_SERVICE,
    data_root: DataRootOpt = None,
) -> None:
    """Read the feature service's features for entity rows from the online store (SQLite or Redis)."""
    from ml_tasks.features.online import online_features as run

    settings = make_settings(data_root)
    handle = open_store(settings)
    emit(run(handle, feature_service, entity))
