"""``python -m scripts.airflow_local start|stop|status|wait|backfill|airflow``."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import subprocess
import sys
from pathlib import Path

from scripts.airflow_local.config import BIN, PlatformError
from scripts.airflow_local.lifecycle import Platform


def parser() -> argparse.ArgumentParser:
    out = argparse.ArgumentParser(
        prog="python -m scripts.airflow_local",
        description="Local Airflow 3 platform (api-server, scheduler, dag-processor).",
        epilog=(
            "airflow: `python -m scripts.airflow_local airflow -- dags list` runs the airflow CLI here.\n"
            "backfill: `python -m scripts.airflow_local backfill taxi_ingest 2024-02-01 2024-02-07` runs one"
            " interval per Chicago day, both ends included, and waits for them (safe on SQLite)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    out.add_argument("command", choices=["start", "stop", "status", "wait", "airflow", "backfill"])
    out.add_argument("--home", type=Path, help="AIRFLOW_HOME (default .flywheel/airflow)")
    out.add_argument("--port", type=int, help="API port (default 8080; log servers use port+1, port+2)")
    out.add_argument(
        "--data-root", type=Path, help="FLYWHEEL_DATA_ROOT for the steps (default .flywheel/data)"
    )
    out.add_argument(
        "--db",
        choices=["postgres", "sqlite"],
        help="metadata DB (default postgres, or FLYWHEEL_AIRFLOW_DB): postgres runs PostgreSQL, the MLflow"
        " server and Redis; sqlite is the lightest (no server besides Airflow's)",
    )
    out.add_argument("--timeout", type=float, default=180, help="seconds to wait for readiness")
    out.add_argument("--conf", default="{}", help="backfill: run conf (params) as JSON")
    return out


def main(argv: list[str] | None = None) -> int:
    cli = parser()
    ns, rest = cli.parse_known_args(argv)
    if rest and ns.command not in ("airflow", "backfill"):
        cli.error(f"unrecognized arguments: {' '.join(rest)}")
    if ns.command == "backfill" and len(rest) != 3:
        cli.error("backfill takes DAG_ID FROM_DAY TO_DAY (YYYY-MM-DD, local days, both included)")
    try:
        platform = Platform.from_env(home=ns.home, port=ns.port, data_root=ns.data_root, db=ns.db)
        if ns.command == "start":
            platform.start(ns.timeout)
            print(f"Airflow UI: {platform.url}  login: {platform.username} / {platform.password}")
            if platform.mlflow_url:
                print(f"MLflow UI:  {platform.mlflow_url}")
            print("stop with: make stop  (or python -m scripts.airflow_local stop)")
        elif ns.command == "stop":
            platform.stop()
        elif ns.command == "status":
            print(json.dumps(platform.status(), indent=2))
            return 0 if platform.running() else 1
        elif ns.command == "wait":
            platform.wait_ready(ns.timeout)
            print(f"ready: {platform.url}")
        elif ns.command == "backfill":
            dag_id, first, last = rest
            runs = platform.api().backfill(
                dag_id,
                dt.date.fromisoformat(first),
                dt.date.fromisoformat(last),
                conf=json.loads(ns.conf),
                timeout=max(ns.timeout, 3600),
                leave_unpaused=True,
            )
            for run in runs:
                print(f"{run['logical_date']}  {run['state']:8s}  {run['dag_run_id']}")
            return 0 if all(r["state"] == "success" for r in runs) else 1
        elif ns.command == "airflow":
            args = rest[1:] if rest[:1] == ["--"] else rest
            if shutil.which("airflow", path=str(BIN)) is None:
                raise PlatformError(f"airflow CLI not found in {BIN}")
            return subprocess.call([str(BIN / "airflow"), *args], env=platform.env(), cwd=platform.home)
    except PlatformError as exc:
        print(f"airflow-local: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
