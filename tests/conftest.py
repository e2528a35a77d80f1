"""Shared fixtures and the CLI runners; every test is marked with its tier (its folder under tests/).

``run_cli`` runs ``ml-tasks ARGS`` in this process (``ml_tasks.cli.main``): no interpreter start-up and no
re-import of Feast/GX/torch per call. ``run_cli_process`` runs the same argv as a subprocess, as a DAG
does: only for the few tests that pin the process contract (one JSON line on stdout, the exit code, the
``FLYWHEEL_XCOM_FILE`` file).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
# ../shared/datasets/chicago_taxi beside the repo, or wherever FLYWHEEL_CHICAGO_SAMPLES points
CHICAGO_SAMPLES = Path(
    os.environ.get("FLYWHEEL_CHICAGO_SAMPLES", REPO.parent / "shared" / "datasets" / "chicago_taxi")
)
#: tiers by folder (markers registered in pyproject.toml)
TIERS = ("unit", "dags", "integration", "e2e", "deploy", "reliability")
#: the same format as ``cli.main``'s logging.basicConfig
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns xdist_group marks into node ids
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its folder's tier; e2e tests share one xdist group (one Airflow at a time)."""
    xdist = config.pluginmanager.hasplugin("xdist")  # registers xdist_group (absent with -p no:xdist)
    for item in items:
        try:
            tier = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:
            continue
        if tier in TIERS:
            item.add_marker(tier)
        if tier in ("e2e", "deploy") and xdist:  # deploy: image runs and chart renders, one at a time
            item.add_marker(pytest.mark.xdist_group(tier))


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty data root, also exported as FLYWHEEL_DATA_ROOT (for run_cli and subprocesses)."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("FLYWHEEL_DATA_ROOT", str(root))
    from ml_tasks.settings import get_settings

    get_settings.cache_clear()
    yield root
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def chicago_samples() -> Path:
    """The real Chicago trips samples; tests using it skip clearly when they are absent."""
    if not (CHICAGO_SAMPLES / "tfx_simple_data.csv").is_file():
        pytest.skip(
            f"real Chicago taxi samples not found at {CHICAGO_SAMPLES} (set FLYWHEEL_CHICAGO_SAMPLES)"
        )
    return CHICAGO_SAMPLES


def _summary(args: tuple[str, ...], returncode: int, stdout: str, stderr: str, check: bool) -> dict[str, Any]:
    if returncode != 0:
        if check:
            raise AssertionError(f"ml-tasks {' '.join(args)} failed ({returncode}):\n{stderr[-4000:]}")
        return {"returncode": returncode, "stderr": stderr, "stdout": stdout}
    lines = [line for line in stdout.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one JSON line on stdout, got {len(lines)}: {stdout[-2000:]}"
    return dict(json.loads(lines[0]))


def _clear_caches() -> None:
    from ml_tasks.settings import get_settings
    from ml_tasks.storage import code_version

    get_settings.cache_clear()
    code_version.cache_clear()  # reads FLYWHEEL_CODE_VERSION


@contextlib.contextmanager
def _isolated_call(
    args: tuple[str, ...], env: dict[str, str] | None
) -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """What a fresh process would give ``main``: its env, argv, cwd, logging, and no state left behind.

    Restored afterwards: os.environ (steps export variables, MLflow sets MLFLOW_TRACKING_URI), the working
    directory, root logging, MLflow's global tracking URI and active run, torch's thread count, the
    settings and code-version caches.
    """
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, Path.cwd()
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    mlflow_uri = _mlflow_uri()
    torch_threads = _torch_threads()
    out, err = io.StringIO(), io.StringIO()
    handler = logging.StreamHandler(err)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    os.environ.update(env or {})
    sys.argv = ["ml-tasks", *args]  # click names the program after argv[0] in usage messages
    _clear_caches()
    # cli.main's basicConfig is a no-op when the root logger has handlers (pytest's): log to err here
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield out, err
    finally:
        for extra in [h for h in root.handlers if h not in saved_handlers]:
            root.removeHandler(extra)
        root.setLevel(saved_level)
        _reset_mlflow(mlflow_uri)
        _reset_torch(torch_threads)
        os.chdir(saved_cwd)
        sys.argv = saved_argv
        os.environ.clear()
        os.environ.update(saved_env)
        _clear_caches()


_UNSET = object()


def _mlflow_uri() -> Any:
    if "mlflow" not in sys.modules:
        return _UNSET
    from mlflow.tracking._tracking_service import utils

    return utils._tracking_uri


def _reset_mlflow(before: Any) -> None:
    if "mlflow" not in sys.modules:
        return
    import mlflow

    if mlflow.active_run() is not None:  # a process would end it at exit
        mlflow.end_run()
    mlflow.set_tracking_uri(None if before is _UNSET else before)


def _torch_threads() -> int | None:
    if "torch" not in sys.modules:
        return None
    import torch

    return int(torch.get_num_threads())


def _reset_torch(before: int | None) -> None:
    if "torch" not in sys.modules:
        return
    import torch

    if before is None:  # torch was first imported by this call: back to its default (as at start-up)
        omp = os.environ.get("OMP_NUM_THREADS", "")
        before = int(omp) if omp.isdigit() and int(omp) > 0 else len(os.sched_getaffinity(0))
    torch.set_num_threads(before)


def run_cli(*args: str, env: dict[str, str] | None = None, check: bool = True) -> dict[str, Any]:
    """Run ``ml-tasks ARGS`` in this process and return its one JSON summary line.

    ``env`` overrides the environment for the call only. A failure raises AssertionError with the tail of
    stderr; with ``check=False`` it returns ``{"returncode", "stderr", "stdout"}`` instead. Exit codes are
    those of the process: SystemExit's code, 1 for an exception that escapes ``main`` (its traceback on
    stderr, as the interpreter would print it).
    """
    from ml_tasks.cli import main

    returncode = 0
    with _isolated_call(args, env) as (out, err):
        try:
            main(list(args))
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                returncode = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
                returncode = 1
        except Exception:
            traceback.print_exc(file=sys.stderr)
            returncode = 1
    return _summary(args, returncode, out.getvalue(), err.getvalue(), check)


def run_cli_process(*args: str, env: dict[str, str] | None = None, check: bool = True) -> dict[str, Any]:
    """Run ``ml-tasks ARGS`` as a subprocess, as a DAG's local runner does; returns as :func:`run_cli`."""
    proc = subprocess.run(
        [sys.executable, "-m", "ml_tasks.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    return _summary(args, proc.returncode, proc.stdout, proc.stderr, check)


def fails_with_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run ``ml-tasks ARGV`` in-process; assert exit 1, one error line, no traceback; return that line."""
    from ml_tasks import cli

    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 1
    captured = capsys.readouterr()
    assert captured.out == ""  # no JSON summary for a failed step
    errors = [line for line in captured.err.splitlines() if line.startswith("ml-tasks: error:")]
    assert len(errors) == 1, captured.err
    assert "Traceback" not in captured.err
    return errors[0]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The DAG parse-time table (tests/dags record it on their reports; this runs in the xdist controller)."""
    rows = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", ())
        if name == "dag_parse"
    ]
    if not rows:
        return
    terminalreporter.section("DAG parse times (one interpreter: airflow.sdk once, dags/_lib per file)")
    for row in sorted(rows, key=lambda r: str(r["file"])):
        terminalreporter.write_line(
            f"{row['file']:<28} parse {row['parse_seconds'] * 1000:7.1f} ms   "
            f"(airflow.sdk import {row['sdk_import_seconds']:.2f} s, {row['new_modules']} new modules)"
        )
