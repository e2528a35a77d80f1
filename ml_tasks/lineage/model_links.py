"""Model-version and MLflow-run nodes: facts from the registry's tags and the tracking store's runs.

mlflow is imported only when a model link is followed (a walk over partitions alone never imports it).
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ml_tasks.contract import (
    TAG_CODE_VERSION,
    TAG_DAG_ID,
    TAG_DAG_RUN_ID,
    TAG_DATA_INTERVAL_END,
    TAG_DATA_INTERVAL_START,
    TAG_DECISION,
    TAG_FEATURE_SERVICE,
    TAG_METRIC,
    TAG_ONNX_SHA256,
    TAG_RUN_ID,
    TAG_TASK_ID,
    TAG_TRAINING_SET_SHA256,
    TAG_TRAINING_SET_URI,
)
from ml_tasks.lineage.nodes import MISMATCH, MODEL, RUN, VERIFIED, LineageError, Node, check, short
from ml_tasks.models import registry, tracking
from ml_tasks.settings import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# the tags the registry and tracking write (their modules import no MLflow: cheap to import here)
TAG_RUN_ID_PREFIX = f"{TAG_RUN_ID}."
TAG_METRIC_PREFIX = f"{TAG_METRIC}."
RUN_TAGS = {
    "dag_id": TAG_DAG_ID,
    "dag_run_id": TAG_DAG_RUN_ID,
    "task_id": TAG_TASK_ID,
    "code_version": TAG_CODE_VERSION,
    "data_interval_start": TAG_DATA_INTERVAL_START,
    "data_interval_end": TAG_DATA_INTERVAL_END,
}
MODEL_VERSION = re.compile(r"^(?:models:/)?(?P<name>[A-Za-z0-9_.-]+)/(?P<version>\d+)$")
MODEL_ALIAS = re.compile(r"^(?:models:/)?(?P<name>[A-Za-z0-9_.-]+)@(?P<alias>[A-Za-z0-9_.-]+)$")

#: follows a partition link: (uri, file hashes the consumer read or None, consumer id) -> node id
PartitionLink = Callable[[str, dict[str, str] | None, str | None], str]


class ModelLinks:
    """Model-version and run nodes of one walk, in its node table; the MLflow client is opened lazily."""

    def __init__(self, settings: Settings, nodes: dict[str, Node], partition: PartitionLink) -> None:
        self.settings = settings
        self.nodes = nodes
        self.partition = partition
        self._client: MlflowClient | None = None
        self._client_error: str | None = None

    def client(self) -> MlflowClient | None:
        if self._client is None and self._client_error is None:
            try:
                uri = tracking.tracking_uri(self.settings)
                db = uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else None
                if db is not None and not Path(db).is_file():
                    # opening a SQLite store would create an empty one: there is nothing to find there
                    self._client_error = f"no MLflow store at {uri}"
                else:
                    self._client = tracking.client(self.settings)
            except Exception as exc:  # a bad URI or an unreachable server: reported on the model link
                self._client_error = f"MLflow tracking store unusable: {exc}"
        return self._client

    def from_record(self, record: dict[str, Any], consumer: Node) -> str:
        """The version a consumer's ``{"model": record}`` names, checked against what the record says."""
        name, version = str(record.get("name")), str(record.get("version"))
        node_id = self.model(name, version)
        node = self.nodes[node_id]
        if node.exists and node.facts:
            for key, tag in (("onnx_sha256", TAG_ONNX_SHA256), ("feature_service", TAG_FEATURE_SERVICE)):
                if key in record:
                    have = node.facts.get("tags", {}).get(tag)
                    node.checks.append(
                        check(f"{key} of {consumer.id}", have == record[key], record[key], have, consumer.id)
                    )
                    if have != record[key]:
                        node.problems.append(
                            f"{consumer.id} was scored by {key} {record[key]} but the version says {have}"
                        )
            if record.get("run_id") and record["run_id"] != node.facts.get("run_id"):
                node.problems.append(
                    f"{consumer.id} records run {record['run_id']}, the version {node.facts.get('run_id')}"
                )
        return node_id

    def model(self, name: str, version: str, alias: str | None = None, *, target: bool = False) -> str:
        """The node of a model version (``alias`` resolved first); raises only for the target."""
        client = self.client()
        if client is None:
            if target:
                raise LineageError(f"cannot look up model {name}/{alias or version}: {self._client_error}")
            node_id = f"models:/{name}/{version}"
            return self._missing(node_id, MODEL, node_id, self._client_error or "no MLflow client")
        try:
            if alias is not None:
                info = registry.alias_version(client, name, alias)
                if info is None:
                    raise LineageError(f"no version of model {name!r} holds the alias @{alias}")
            else:
                info = registry.get_version(client, name, version)
        except LineageError:
            raise
        except Exception as exc:
            text = f"model version {name}/{alias or version} not found in the registry: {short(exc)}"
            if target:
                raise LineageError(text) from exc
            node_id = f"models:/{name}/{version}"
            return self._missing(node_id, MODEL, node_id, text)
        node_id = info.uri
        if node_id in self.nodes:
            return node_id
        node = Node(id=node_id, kind=MODEL, uri=info.uri)
        self.nodes[node_id] = node
        tags = {k: v for k, v in sorted(info.tags.items()) if k.startswith("flywheel.")}
        runs = {
            k.removeprefix(TAG_RUN_ID_PREFIX): v for k, v in tags.items() if k.startswith(TAG_RUN_ID_PREFIX)
        }
        node.facts = {
            "name": info.name,
            "version": info.version,
            "aliases": list(info.aliases),
            "run_id": info.run_id,
            "source": info.source,
            "onnx_sha256": tags.get(TAG_ONNX_SHA256),
            "feature_service": tags.get(TAG_FEATURE_SERVICE),
            "threshold": tags.get("flywheel.threshold"),
            "metrics": {
                k.removeprefix(TAG_METRIC_PREFIX): v
                for k, v in tags.items()
                if k.startswith(TAG_METRIC_PREFIX)
            },
            "promotion": tags.get(TAG_DECISION),
            "runs": runs,
            "training_set_uri": tags.get(TAG_TRAINING_SET_URI),
            "training_set_sha256": tags.get(TAG_TRAINING_SET_SHA256),
            "tags": tags,
        }
        run_id = runs.get("train") or info.run_id
        run_node = None
        if run_id:
            node.children.append(self.run(client, run_id))
            run_node = self.nodes[node.children[-1]]
        else:
            node.problems.append(
                f"{node_id} names no training run (no {TAG_RUN_ID_PREFIX}train tag, no run id)"
            )
        # the training set hangs under the run that read it (under the version when the run is gone)
        owner = run_node if run_node is not None and run_node.exists else node
        ts_uri = tags.get(TAG_TRAINING_SET_URI) or (
            run_node.facts.get("tags", {}).get(TAG_TRAINING_SET_URI) if run_node is not None else None
        )
        if not ts_uri:
            node.problems.append(f"{node_id} has no {TAG_TRAINING_SET_URI} tag: the training set is unknown")
            return node_id
        ts_id = self.partition(ts_uri, None, node_id)
        owner.children.append(ts_id)
        self._check_training_set(self.nodes[ts_id], tags.get(TAG_TRAINING_SET_SHA256), node_id, run_node)
        return node_id

    def _check_training_set(
        self, ts: Node, expected: str | None, model_id: str, run_node: Node | None
    ) -> None:
        run_sha = run_node.facts.get("tags", {}).get(TAG_TRAINING_SET_SHA256) if run_node else None
        if expected and run_sha and expected != run_sha:
            ts.problems.append(f"{model_id} and its run record different training-set sha256s")
        expected = expected or run_sha
        if not ts.exists or not ts.manifest:
            return
        actual = ts.facts.get("sha256")
        if expected is None:
            ts.problems.append(
                f"{model_id} records no {TAG_TRAINING_SET_SHA256}: the training set is unverified"
            )
            return
        ok = actual == expected
        ts.facts["sha256_recorded"] = expected
        ts.facts["sha256_verdict"] = VERIFIED if ok else MISMATCH
        ts.checks.append(check("training-set sha256 vs model tag", ok, expected, actual, model_id))
        if not ok:
            ts.problems.append(
                f"training set sha256 {actual} differs from {expected} recorded by {model_id}: the model was"
                " trained on other data than the partition holds now"
            )

    def run(self, client: MlflowClient, run_id: str) -> str:
        """The node of an MLflow run: its experiment, status, DAG run, code version, params."""
        node_id = f"runs:/{run_id}"
        if node_id in self.nodes:
            return node_id
        try:
            run = client.get_run(run_id)
        except Exception as exc:
            return self._missing(node_id, RUN, node_id, f"MLflow run {run_id} not found: {short(exc)}")
        experiment: str | None = None
        try:
            experiment = client.get_experiment(run.info.experiment_id).name
        except Exception as exc:  # the run is what matters; a vanished experiment is only reported
            log.debug("experiment %s of run %s: %s", run.info.experiment_id, run_id, exc)
        tags = dict(run.data.tags)
        node = Node(id=node_id, kind=RUN, uri=node_id)
        node.facts = {
            "run_id": run_id,
            "run_name": run.info.run_name,
            "experiment": experiment,
            "experiment_id": run.info.experiment_id,
            "status": run.info.status,
            "lifecycle_stage": run.info.lifecycle_stage,
            **{k: tags.get(t) for k, t in RUN_TAGS.items()},
            "start_time": _ms(run.info.start_time),
            "end_time": _ms(run.info.end_time),
            "params": dict(sorted(run.data.params.items())),
            "tags": {k: v for k, v in sorted(tags.items()) if k.startswith("flywheel.")},
        }
        if run.info.lifecycle_stage == "deleted":
            node.problems.append(f"MLflow run {run_id} is deleted")
        self.nodes[node_id] = node
        return node_id

    def _missing(self, node_id: str, kind: str, uri: str, problem: str) -> str:
        if node_id not in self.nodes:
            self.nodes[node_id] = Node(id=node_id, kind=kind, uri=uri, exists=False, problems=[problem])
        return node_id


def _ms(value: int | None) -> str | None:
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC).isoformat(timespec="seconds") if value else None
