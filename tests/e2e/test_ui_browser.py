"""The Airflow UI as a new user meets it, in a real browser (Debian's chromium driven by playwright).

Runs after test_taxi_training_loop.py (file order: the monitoring runs and their drift reports exist).
On the e2e platform (PostgreSQL, the MLflow server, Redis): log in; the five DAGs are listed; the
``taxi_training`` trigger form shows titled params, two are changed and the run is triggered from the form
and succeeds; the train task's "MLflow run" link opens the MLflow UI on that run and its metrics render;
a monitoring task's "Report" link opens the Evidently drift report and it renders; the Flywheel view
shows the champion and the drift verdicts. Every page is watched: a console error, an uncaught page
error or an HTTP 4xx/5xx fails the test (the login page's own 401s before signing in excepted).
Screenshots go to ``$FLYWHEEL_ARTIFACTS_DIR/ui`` (default ``.flywheel/artifacts/ui``).

Without chromium (``apt-get install chromium``) the test skips, unless FLYWHEEL_REQUIRE_BROWSER=1 (CI).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from scripts.airflow_local import REPO, AirflowApi, Platform
from tests.e2e.conftest import TIMINGS, registry

pytestmark = pytest.mark.timeout(1800)
ARTIFACTS = Path(os.environ.get("FLYWHEEL_ARTIFACTS_DIR", REPO / ".flywheel" / "artifacts")) / "ui"
TRAINING, MONITORING = "taxi_training", "taxi_monitoring"
#: the only errors tolerated, each a third party's own: the MLflow UI asks its optional auth plugin who the
#: user is (404 on a server started without ``--app-name basic-auth``), and says so in the console
TOLERATED = [(404, "/ajax-api/2.0/mlflow/users/current")]
#: the form's changes: one trial of at most two epochs, on the training module's days, on its last day
LOGICAL_DAY = dt.date(2024, 1, 28)
FORM = {"element_trials": "1", "element_max_epochs": "2", "element_window_end": "2024-01-28"}


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("FLYWHEEL_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class Browser:
    """One browser context, every page watched for console errors, page errors and HTTP errors."""

    context: Any
    problems: list[str] = field(default_factory=list)
    watching: bool = False

    def watch(self, page: Any) -> Any:
        def tolerated(status: int | None, url: str) -> bool:
            base = url.split("?")[0]
            return any(status in (None, code) and base.endswith(path) for code, path in TOLERATED)

        def on_console(message: Any) -> None:
            source = str((message.location or {}).get("url", ""))
            if message.text.startswith("Failed to load resource") and tolerated(None, source):
                return
            if self.watching and message.type == "error":
                self.problems.append(f"console error on {page.url}: {message.text} ({source})")

        def on_response(response: Any) -> None:
            if self.watching and response.status >= 400 and not tolerated(response.status, response.url):
                self.problems.append(f"HTTP {response.status} for {response.url} (page {page.url})")

        page.on("console", on_console)
        page.on("pageerror", lambda error: self.problems.append(f"page error on {page.url}: {error}"))
        page.on("response", on_response)
        return page

    def shot(self, page: Any, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        assert path.stat().st_size > 10_000, f"{name}: screenshot looks empty"
        return path


@contextlib.contextmanager
def browser() -> Iterator[Browser]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        instance = pw.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            context = instance.new_context(viewport={"width": 1400, "height": 1000})
            context.set_default_timeout(30_000)
            yield Browser(context)
        finally:
            instance.close()


def latest_monitor(api: AirflowApi) -> tuple[str, int]:
    """A successful ``monitor`` task instance of the newest successful monitoring run."""
    runs = [r for r in api.dag_runs(MONITORING, order_by="-run_after") if r["state"] == "success"]
    for run in runs:
        for ti in api.mapped_task_instances(MONITORING, run["dag_run_id"], "monitor"):
            if ti["state"] == "success":
                return run["dag_run_id"], int(ti["map_index"])
    pytest.fail("no successful taxi_monitoring run: this module runs after test_taxi_training_loop.py")


def task_details(platform: Platform, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    mapped = f"/mapped/{map_index}" if map_index >= 0 else ""
    return f"{platform.url}/dags/{dag_id}/runs/{quote(run_id, safe='')}/tasks/{task_id}{mapped}/details"


def test_a_new_user_in_the_ui(airflow_platform: Platform, api: AirflowApi) -> None:
    platform = airflow_platform
    assert platform.mlflow_url, "the e2e platform runs the MLflow tracking server"
    monitor_run, monitor_index = latest_monitor(api)
    before = {r["dag_run_id"] for r in api.dag_runs(TRAINING)}
    started = time.monotonic()
    with browser() as ui:
        page = ui.watch(ui.context.new_page())
        page.goto(platform.url)
        page.fill("input[name=username]", platform.username)
        page.fill("input[name=password]", platform.password)
        page.click("button[type=submit]")
        page.wait_for_url(lambda url: "/auth/login" not in url)
        ui.watching = True  # from here on, any error fails the test

        page.goto(f"{platform.url}/dags")
        for dag_id in sorted(platform.expected_dag_ids()):
            page.get_by_role("link", name=dag_id, exact=True).first.wait_for()
        shots = [ui.shot(page, "01-dags")]

        page.goto(f"{platform.url}/dags/{TRAINING}")
        page.get_by_role("button", name="Trigger").first.click()
        dialog = page.get_by_role("dialog")
        for title in ("Trials", "Training days", "Promotion margin", "Force promotion"):
            # the form's label: the param's title, and a "*" when the param is required
            dialog.get_by_text(re.compile(rf"^\s*{re.escape(title)}\s*\*?\s*$")).first.wait_for()
        assert dialog.get_by_text("Inject fault (tests)").count() == 1  # this platform allows fault injection
        # the logical date: a day of the data, before the e2e platform's end date (a run triggered past a
        # DAG's end_date "succeeds" at once with no task instances: Airflow schedules no task after it)
        dialog.get_by_test_id("datetime-input").click()
        today = dt.datetime.now(dt.UTC).strftime("%Y/%m/%d")  # the picker's date field, preset to now (UTC)
        page.locator(f'input[value="{today}"]').first.fill(LOGICAL_DAY.strftime("%Y/%m/%d"))
        page.keyboard.press("Enter")
        shown = dialog.get_by_test_id("datetime-input").inner_text()
        assert shown.startswith(LOGICAL_DAY.strftime("%b %d, %Y")), shown
        for name, value in FORM.items():
            dialog.locator(f"input[name={name}]").fill(value)
        shots.append(ui.shot(page, "02-trigger-form"))
        dialog.get_by_role("button", name="Trigger", exact=True).click()
        dialog.wait_for(state="hidden")

        new = poll_new_run(api, before)
        run = api.wait_runs(TRAINING, [new], timeout=1500)[new]
        assert run["state"] == "success", api.task_instances(TRAINING, new)
        assert run["conf"]["trials"] == 1 and run["conf"]["max_epochs"] == 2, run["conf"]
        assert run["conf"]["window_end"] == "2024-01-28", run["conf"]
        assert run["logical_date"].startswith(LOGICAL_DAY.isoformat()), run["logical_date"]
        train = api.xcom(TRAINING, new, "train")
        assert len(train["trials"]) == 1, train["trials"]  # the form's change reached the step

        # the train task's link: the MLflow run page, with the metrics the tracking server holds
        page.goto(task_details(platform, TRAINING, new, "train"))
        link = page.get_by_role("link", name="MLflow run")
        href = link.get_attribute("href") or ""
        assert href == f"{platform.mlflow_url}/#/runs/{train['run_id']}", href
        with ui.context.expect_page() as opened:
            link.click()  # another origin: a new tab
        mlflow_page = ui.watch(opened.value)
        metrics = registry(platform).get_run(train["run_id"]).data.metrics
        assert metrics, "the train run logged no metrics"
        mlflow_page.get_by_text(sorted(metrics)[0]).first.wait_for(timeout=120_000)  # a large React app
        shots.append(ui.shot(mlflow_page, "03-mlflow-run"))
        mlflow_page.close()

        # a monitoring task's link: the Evidently report, served by the plugin, rendering its charts
        page.goto(task_details(platform, MONITORING, monitor_run, "monitor", monitor_index))
        page.get_by_role("link", name="Report").click()
        page.wait_for_url(lambda url: "/flywheel/files/" in url and url.endswith("drift_report.html"))
        page.get_by_text("Drift in column").first.wait_for()
        shots.append(ui.shot(page, "04-drift-report"))

        # the Flywheel view in the UI's navigation
        page.goto(platform.url + "/dags")
        page.get_by_role("link", name="Flywheel", exact=True).click()
        view = page.frame_locator("iframe").first
        view.locator("#models").get_by_role("cell", name="champion", exact=True).first.wait_for()
        view.locator("#drift").get_by_text("drift", exact=True).first.wait_for()
        view.locator("#partitions").get_by_text("curated/trips").wait_for()
        shots.append(ui.shot(page, "05-flywheel-view"))
    TIMINGS["ui: browser session (incl. one training run)"] = time.monotonic() - started
    assert ui.problems == [], "\n".join(ui.problems)
    names = ["01-dags", "02-trigger-form", "03-mlflow-run", "04-drift-report", "05-flywheel-view"]
    assert [p.stem for p in shots] == names


def poll_new_run(api: AirflowApi, before: set[str], timeout: float = 60) -> str:
    """The run the form created (the REST API lists it within a second or two)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new = [r for r in api.dag_runs(TRAINING) if r["dag_run_id"] not in before]
        if new:
            assert len(new) == 1, new
            assert new[0]["run_type"] == "manual", new[0]
            return str(new[0]["dag_run_id"])
        time.sleep(1)
    pytest.fail(f"the trigger form created no {TRAINING} run within {timeout:.0f} s")


def test_the_report_server_refuses_anonymous_requests_and_escapes(airflow_platform: Platform) -> None:
    """The same routes on the running API server: Airflow's auth, the data-root confinement."""
    import httpx

    url = f"{airflow_platform.url}/flywheel"
    assert httpx.get(f"{url}/view").status_code == 401
    assert httpx.get(f"{url}/files/curated").status_code == 401
    login = httpx.post(
        f"{airflow_platform.url}/auth/token",
        json={"username": airflow_platform.username, "password": airflow_platform.password},
    )
    auth = {"Authorization": f"Bearer {login.json()['access_token']}"}
    assert httpx.get(f"{url}/files/curated/trips", headers=auth).status_code == 200
    assert httpx.get(f"{url}/files/%2e%2e/%2e%2e/etc/passwd", headers=auth).status_code == 400
    assert httpx.get(f"{url}/files/%2Fetc%2Fpasswd", headers=auth).status_code == 400
