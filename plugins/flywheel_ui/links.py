"""The task links: resolved in the API server from the step's JSON summary (its ``return_value`` XCom)."""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote, urlparse

from airflow.sdk import BaseOperatorLink

from flywheel_ui.outputs import StepOutputs, step_outputs
from flywheel_ui.paths import data_root

#: the operators whose summaries these links read (dags/_lib/local.py and dags/_lib/pod.py)
STEP_OPERATORS = frozenset({"MlStepOperator", "MlStepPodOperator"})
#: where this plugin's FastAPI app is mounted in the API server
URL_PREFIX = "/flywheel"


def mlflow_ui_url() -> str | None:
    """The MLflow UI: ``FLYWHEEL_MLFLOW_UI_URL``, else an http(s) ``MLFLOW_TRACKING_URI``."""
    for name in ("FLYWHEEL_MLFLOW_UI_URL", "MLFLOW_TRACKING_URI"):
        value = os.environ.get(name, "").strip()
        if value.startswith(("http://", "https://")):
            return value.rstrip("/")
    return None


def app_url(path: str) -> str:
    """A URL of this plugin's app, under the API server's base path (``[api] base_url``)."""
    from airflow.configuration import conf

    base = urlparse(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")
    return f"{base}{URL_PREFIX}/{path.lstrip('/')}"


def file_url(relative: str) -> str:
    return app_url("files/" + quote(relative))


def outputs_url(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    path = "outputs/" + "/".join(quote(part, safe="") for part in (dag_id, run_id, task_id))
    return app_url(path + (f"?map_index={map_index}" if map_index >= 0 else ""))


def read_summary(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
    """The task's ``return_value`` XCom, parsed (None when absent)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key="return_value", run_id=run_id, dag_ids=dag_id, task_ids=task_id, map_indexes=map_index
            ).with_only_columns(XComModel.value)
        ).first()
    if row is None:
        return None
    value = row.value
    try:
        return json.loads(value) if isinstance(value, str | bytes) else value
    except ValueError:
        return value


class _StepLink(BaseOperatorLink):
    """A link that exists only for step tasks whose summary points at something."""

    name = "flywheel"

    def url(self, outputs: StepOutputs, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
        raise NotImplementedError

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if getattr(operator, "task_type", None) not in STEP_OPERATORS:
            return ""
        summary = read_summary(ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index)
        outputs = step_outputs(summary, data_root())
        return self.url(outputs, ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index)


class MlflowRunLink(_StepLink):
    name = "MLflow run"

    def url(self, outputs: StepOutputs, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
        base = mlflow_ui_url()
        return f"{base}/#/runs/{quote(outputs.run_id)}" if base and outputs.run_id else ""


class ModelVersionLink(_StepLink):
    name = "Model version"

    def url(self, outputs: StepOutputs, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
        base = mlflow_ui_url()
        if not base or outputs.model is None:
            return ""
        name, version = outputs.model
        return f"{base}/#/models/{quote(name, safe='')}/versions/{quote(version, safe='')}"


class ReportLink(_StepLink):
    """The step's one HTML report (validation data docs, drift report), else its outputs page."""

    name = "Report"

    def url(self, outputs: StepOutputs, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
        if len(outputs.reports) == 1:
            return file_url(outputs.reports[0])
        return outputs_url(dag_id, run_id, task_id, map_index) if outputs.reports else ""


class OutputsLink(_StepLink):
    """Everything the step wrote: partitions with their manifests, reports, files."""

    name = "Outputs"

    def url(self, outputs: StepOutputs, dag_id: str, run_id: str, task_id: str, map_index: int) -> str:
        if outputs.partitions or outputs.reports or outputs.files:
            return outputs_url(dag_id, run_id, task_id, map_index)
        return ""


STEP_LINKS: list[BaseOperatorLink] = [MlflowRunLink(), ModelVersionLink(), ReportLink(), OutputsLink()]
