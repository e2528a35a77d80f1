"""The plugin's app behind Airflow's own authentication, in a fresh interpreter with a migrated DB.

The app is mounted the way the API server mounts plugin apps (``app.mount(url_prefix, app)``) and its
routes use the API server's ``get_user`` / ``requires_access_dag``, so the tokens are checked by the
real SimpleAuthManager against the real (SQLite) metadata DB. The e2e suite checks the same routes on
the running platform.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.dags.conftest import PLUGINS, run_python

PROBE = """
import json, os, sys
sys.path.insert(0, {plugins!r})
from airflow.utils.db import initdb
initdb()
from fastapi import FastAPI
from fastapi.testclient import TestClient
from airflow.api_fastapi.app import init_auth_manager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
import flywheel_plugin

plugin = flywheel_plugin.FlywheelPlugin
[spec] = plugin.fastapi_apps
parent = FastAPI()
parent.mount(spec["url_prefix"], spec["app"])  # what airflow.api_fastapi.app.init_plugins does
token = init_auth_manager().generate_jwt(SimpleAuthManagerUser(username="admin", role="viewer"))
client = TestClient(parent)
out = {{"links": [link.name for link in plugin.global_operator_extra_links], "views": plugin.external_views}}

def call(path, headers=None, cookie=None):
    client.cookies.clear()
    if cookie:
        client.cookies.set("_token", cookie)
    r = client.get(path, headers=headers or {{}})
    return {{"status": r.status_code, "body": r.text[:2000], "csp": r.headers.get("content-security-policy"),
             "type": r.headers.get("content-type")}}

bearer = {{"Authorization": "Bearer " + token}}
out["anonymous"] = {{p: call(p)["status"] for p in {paths!r}}}
forged = {{"Authorization": "Bearer " + token[:-4] + "AAAA"}}
out["forged"] = {{p: call(p, forged)["status"] for p in {paths!r}}}
out["bearer"] = {{p: call(p, bearer) for p in {paths!r}}}
out["cookie"] = call("/flywheel/view", cookie=token)["status"]
out["escapes"] = {{p: call(p, bearer) for p in {escapes!r}}}
print(json.dumps(out))
"""
PATHS = [
    "/flywheel/files/monitoring/taxi_tips/dt=2024-01-02/drift_report.html",
    "/flywheel/files/monitoring/taxi_tips",
    "/flywheel/view",
    "/flywheel/api/cockpit",
    "/flywheel/outputs/taxi_training/manual__x/train",
]
ESCAPES = [
    "/flywheel/files/%2e%2e/secret.txt",
    "/flywheel/files/monitoring/%2e%2e/%2e%2e/secret.txt",
    "/flywheel/files//etc/passwd",
    "/flywheel/files/%2Fetc%2Fpasswd",
    "/flywheel/files/monitoring/escape",
    "/flywheel/files/monitoring/nope.html",
]


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    tmp = tmp_path_factory.mktemp("plugin")
    root = tmp / "data"
    day = root / "monitoring" / "taxi_tips" / "dt=2024-01-02"
    day.mkdir(parents=True)
    (day / "_manifest.json").write_text(json.dumps({"row_counts": {"rows": 48}}))
    (day / "drift_report.html").write_text("<html><body>evidently drift report</body></html>")
    (day / "decision.json").write_text(json.dumps({"verdict": "drift", "retrain": True, "reasons": ["x"]}))
    (tmp / "secret.txt").write_text("TOP-SECRET-CONTENT")
    (root / "monitoring" / "escape").symlink_to(tmp / "secret.txt")
    env = {
        "AIRFLOW_HOME": str(tmp / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{tmp / 'airflow.db'}",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:viewer",
        "AIRFLOW__API_AUTH__JWT_SECRET": "plugin-test-" + "s" * 64,
        "FLYWHEEL_DATA_ROOT": str(root),
        "MLFLOW_TRACKING_URI": "",
    }
    code = PROBE.format(plugins=str(PLUGINS), paths=PATHS, escapes=ESCAPES)
    return run_python(code, env=env, timeout=300)


def test_the_plugin_registers_links_and_the_view(probe: dict[str, object]) -> None:
    assert probe["links"] == ["MLflow run", "Model version", "Report", "Outputs"]
    assert probe["views"] == [
        {"name": "Flywheel", "href": "flywheel/view", "destination": "nav", "url_route": "flywheel",
         "nav_top_level": True}
    ]  # fmt: skip


def test_every_route_refuses_requests_without_a_valid_airflow_token(probe: dict[str, object]) -> None:
    assert probe["anonymous"] == dict.fromkeys(PATHS, 401)
    assert probe["forged"] == dict.fromkeys(PATHS, 403)


def test_an_authenticated_user_reads_reports_listings_and_the_view(probe: dict[str, object]) -> None:
    got = probe["bearer"]
    assert isinstance(got, dict)
    report = got[PATHS[0]]
    assert report["status"] == 200 and "evidently drift report" in report["body"]
    # a report's scripts run sandboxed: they cannot read Airflow's cookie or call its API
    assert report["csp"] == "sandbox allow-scripts allow-popups"
    listing = got[PATHS[1]]
    assert listing["status"] == 200 and "dt=2024-01-02/" in listing["body"]
    view = got[PATHS[2]]
    assert view["status"] == 200 and "Retrain requested: <b>yes</b>" in view["body"]
    assert "MLflow is not a tracking server here" in view["body"]
    cockpit = json.loads(got[PATHS[3]]["body"])
    assert cockpit["retrain_requested"] == "2024-01-02"
    assert [(d["dt"], d["verdict"]) for d in cockpit["drift"]] == [("2024-01-02", "drift")]
    assert cockpit["partitions"][0]["row_counts"] == {"rows": 48}
    # authorised for the DAG, but that task has no summary
    assert got[PATHS[4]]["status"] == 404 and "no summary" in got[PATHS[4]]["body"]
    assert probe["cookie"] == 200  # the UI's session cookie works like the bearer token


def test_path_escapes_are_refused(probe: dict[str, object]) -> None:
    got = probe["escapes"]
    assert isinstance(got, dict)
    statuses = {path: result["status"] for path, result in got.items()}
    assert statuses == {
        ESCAPES[0]: 400,
        ESCAPES[1]: 400,
        ESCAPES[2]: 400,
        ESCAPES[3]: 400,
        ESCAPES[4]: 400,
        ESCAPES[5]: 404,
    }
    assert all("TOP-SECRET-CONTENT" not in r["body"] for r in got.values())


def test_no_plugin_file_is_loaded_as_a_stray_top_level_module() -> None:
    ignore = (PLUGINS / ".airflowignore").read_text().split()
    assert "flywheel_ui/" in ignore  # Airflow would import app.py, links.py... as modules "app", "links"
    assert sorted(p.name for p in PLUGINS.glob("*.py")) == ["flywheel_plugin.py"]
    assert Path(PLUGINS / "flywheel_ui" / "__init__.py").is_file()
