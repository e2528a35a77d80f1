"""The plugin's FastAPI app (mounted at /flywheel): report files, a step's outputs, the Flywheel view.

Airflow does not authenticate plugin apps (a Starlette mount inherits none of the API's dependencies):
every route here depends on the API server's own ``get_user`` / ``requires_access_dag``, so a request
without a valid Airflow token (the UI's cookie or a bearer token) gets 401/403.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import requires_access_dag, requires_authenticated
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from flywheel_ui.cockpit import cockpit
from flywheel_ui.links import file_url, mlflow_ui_url, read_summary
from flywheel_ui.outputs import step_outputs
from flywheel_ui.paths import PathMissing, PathRefused, data_root, resolve_under

#: served reports run their scripts in an opaque origin: they cannot read Airflow's cookie or call its API
REPORT_HEADERS = {
    "Content-Security-Policy": "sandbox allow-scripts allow-popups",
    "X-Content-Type-Options": "nosniff",
}
_templates = Environment(
    loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=select_autoescape(["html"])
)
_templates.globals["file_url"] = file_url

app = FastAPI(title="Flywheel", description="Flywheel's reports and cockpit inside the Airflow UI.")


def _root() -> Path:
    root = data_root()
    if root is None:
        raise HTTPException(404, "no local data root (FLYWHEEL_DATA_ROOT unset or an object store)")
    return root


def _page(name: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(_templates.get_template(name).render(**context))


@app.get("/files/{relative:path}", dependencies=[Depends(requires_authenticated())])
def serve_file(relative: str) -> Response:
    """A file under the data root (read-only), or a folder's listing."""
    root = _root()
    try:
        target = resolve_under(root, relative)
    except PathMissing as exc:
        raise HTTPException(404, str(exc)) from None
    except PathRefused as exc:
        raise HTTPException(400, str(exc)) from None
    if target.is_dir():
        entries = sorted(target.iterdir(), key=lambda p: (not p.is_dir(), p.name))
        listing = [(p.relative_to(root).as_posix(), p.name + ("/" if p.is_dir() else "")) for p in entries]
        return _page("folder.html", folder=target.relative_to(root).as_posix() or ".", entries=listing)
    return FileResponse(target, headers=REPORT_HEADERS)


@app.get(
    "/outputs/{dag_id}/{run_id}/{task_id}",
    dependencies=[Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE))],
)
def task_outputs(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> HTMLResponse:
    """What one task's step produced, from its JSON summary."""
    summary = read_summary(dag_id, run_id, task_id, map_index)
    if summary is None:
        raise HTTPException(404, f"no summary for {dag_id}/{run_id}/{task_id} (map_index {map_index})")
    outputs = step_outputs(summary, data_root())
    return _page(
        "outputs.html", dag_id=dag_id, run_id=run_id, task_id=task_id, outputs=outputs, mlflow=mlflow_ui_url()
    )


@app.get("/api/cockpit", dependencies=[Depends(requires_authenticated())])
def cockpit_json() -> dict[str, Any]:
    """The Flywheel view's data."""
    return cockpit(data_root(), os.environ.get("MLFLOW_TRACKING_URI"))


@app.get("/view", dependencies=[Depends(requires_authenticated())])
def view() -> HTMLResponse:
    """The Flywheel view: champion and challenger, drift per day, the newest partition per dataset."""
    return _page("view.html", state=cockpit_json(), mlflow=mlflow_ui_url())
