"""Lineage: which data and which model produced a partition or a model version, in one call.

:func:`trace` walks from a target down to the raw source partitions:

    predictions partition -> model version -> MLflow run -> training set -> feature partitions
    -> curated partitions -> raw partitions (-> the source description recorded by extract)

Partition links come from the ``_manifest.json`` of each partition: an ``inputs`` entry with ``uri`` and
``files`` (:func:`ml_tasks.storage.input_record`) points at the partition the step read, with the sha256
of each file as it was read. A predictions manifest also holds one ``{"model": {...}}`` record. The model
links come from the MLflow registry: version tags ``flywheel.run_id.<task>``, ``flywheel.training_set.uri``
and ``flywheel.training_set.sha256`` (written at registration, :mod:`ml_tasks.models.registry`).

Every partition reached is checked: its files are hashed again and compared with its own manifest and with
what each consumer recorded; the training set's digest (sha256 of its files' sha256s, as
``build_training_set`` computes it) is compared with the model's tag. A broken link (a partition, manifest,
version or run that is gone, a registry that cannot be reached) becomes a node with ``exists: false`` and a
problem, never an exception; only a target that does not exist raises.

A monitoring partition links its predictions partitions and the model version of its drift reference. A
recorded URI that no longer exists is looked up under the current data root by its layout
(``<layer>/<dataset>/<key>``), so a moved or copied root still traces (``facts.found_at`` says where).

A node reached twice (the same curated day under several feature partitions) is walked once; the text
rendering shows it once, refers back to it, and folds sibling days of one dataset into one line.
mlflow is imported only when a model link is followed (partitions alone: no MLflow, Feast or torch).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.fs as pafs

from ml_tasks.contract import (
    MANIFEST,
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
from ml_tasks.models import registry, tracking
from ml_tasks.settings import Settings
from ml_tasks.storage import DataRoot, Manifest, PartitionError, file_sha256

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

# Layers of the data root (ARCHITECTURE.md) and the node kind each one maps to.
KIND_BY_LAYER = {
    "predictions": "predictions",
    "training_sets": "training_set",
    "features": "features",
    "curated": "curated",
    "staging": "staging",
    "raw": "raw",
    "quarantine": "quarantine",
    "reports": "report",
    "monitoring": "monitoring",
}
MODEL, RUN = "model_version", "mlflow_run"
# order of children in the tree: the chain's order
CHAIN_ORDER = ("predictions", "monitoring", MODEL, RUN, "training_set", "features", "curated", "staging",
               "raw", "quarantine", "report", "partition")  # fmt: skip
RANK = {kind: i for i, kind in enumerate(CHAIN_ORDER)}
# curated manifests record the intermediate partitions of the ingest with these roles: facts, not links
INTERMEDIATE_ROLES = ("staging", "accepted", "quarantine", "validation_report")
MAX_PROBLEMS_SHOWN = 10
VERIFIED, MISMATCH, UNVERIFIED = "verified", "MISMATCH", "unverified"

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

_MODEL_VERSION = re.compile(r"^(?:models:/)?(?P<name>[A-Za-z0-9_.-]+)/(?P<version>\d+)$")
_MODEL_ALIAS = re.compile(r"^(?:models:/)?(?P<name>[A-Za-z0-9_.-]+)@(?P<alias>[A-Za-z0-9_.-]+)$")


class LineageError(PartitionError):
    """The lineage target does not exist or cannot be understood (a PartitionError: the CLI's exit 2)."""


@dataclass
class _Node:
    id: str
    kind: str
    uri: str
    exists: bool = True
    manifest: bool | None = None  # None: this kind has no manifest (model versions, runs)
    facts: dict[str, Any] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    children: list[str] = field(default_factory=list)

    def status(self) -> str | None:
        """verified / MISMATCH / unverified (nothing could be compared) / None (nothing to compare)."""
        if not self.checks:
            return UNVERIFIED if self.manifest is not None else None
        return MISMATCH if any(not c["ok"] for c in self.checks) else VERIFIED

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "uri": self.uri,
            "exists": self.exists,
            "manifest": self.manifest,
            "status": self.status(),
            "facts": self.facts,
            "files": self.files,
            "checks": self.checks,
            "problems": self.problems,
            "children": self.children,
        }


def _check(what: str, ok: bool, expected: Any, actual: Any, source: str) -> dict[str, Any]:
    return {"what": what, "ok": ok, "expected": expected, "actual": actual, "source": source}


class _Tracer:
    """One walk: the node table (deduplicated by id), file access, and a lazy MLflow client."""

    def __init__(self, settings: Settings, verify_files: bool) -> None:
        self.settings = settings
        self.root = DataRoot(settings.data_root)
        self.verify_files = verify_files
        self.nodes: dict[str, _Node] = {}
        self._client: MlflowClient | None = None
        self._client_error: str | None = None
        self._fs: dict[str, tuple[pafs.FileSystem, str]] = {}

    # -- locations ---------------------------------------------------------------------------------
    def locate(self, uri: str) -> tuple[pafs.FileSystem, str]:
        """Filesystem and path of a recorded URI (absolute local path or any pyarrow URI)."""
        if "://" not in uri:
            return pafs.LocalFileSystem(), uri
        if uri.startswith(self.root.uri_prefix) and self.root.uri_prefix:
            return self.root.fs, uri.removeprefix(self.root.uri_prefix)
        fs, path = pafs.FileSystem.from_uri(uri)
        return fs, path

    def rel(self, path: str) -> str | None:
        """``<layer>/<dataset>/<key>`` of a partition path, when it has that shape."""
        parts = path.rstrip("/").split("/")
        if len(parts) >= 3 and parts[-3] in KIND_BY_LAYER:
            return "/".join(parts[-3:])
        return None

    def relocate(self, uri: str) -> tuple[pafs.FileSystem, str, bool]:
        """Where a recorded partition is now: where it was recorded, else the same place under this root.

        A data root that was moved or copied keeps its manifests' absolute URIs; the layout below the
        root is what identifies a partition.
        """
        fs, path = self.locate(uri)
        if _exists(fs, path):
            return fs, path, False
        rel = self.rel(path)
        if rel is not None:
            here = f"{self.root.base}/{rel}"
            if _exists(self.root.fs, here):
                return self.root.fs, here, True
        return fs, path, False

    # -- partitions --------------------------------------------------------------------------------
    def partition(self, uri: str, recorded: dict[str, str] | None, consumer: str | None) -> str:
        """The node of the partition at ``uri`` (walked once); ``recorded``: file hashes the consumer read."""
        fs, path, relocated = self.relocate(uri)
        rel = self.rel(path)
        node_id = rel or uri
        node = self.nodes.get(node_id)
        if node is None:
            layer = rel.split("/", 1)[0] if rel else ""
            node = _Node(id=node_id, kind=KIND_BY_LAYER.get(layer, "partition"), uri=uri)
            self.nodes[node_id] = node
            if relocated:
                node.facts["found_at"] = path
            self._read_partition(node, fs, path)
        if recorded is not None and node.exists and node.manifest:
            mine = node.files
            ok = recorded == mine
            node.checks.append(_check("files read by consumer", ok, recorded, mine, consumer or "?"))
            if not ok:
                node.problems.append(
                    f"{consumer} read other files than {node.id} holds now: {_diff(recorded, mine)}"
                    " (the partition was rewritten after it was read)"
                )
        return node_id

    def _read_partition(self, node: _Node, fs: pafs.FileSystem, path: str) -> None:
        if not _exists(fs, path):
            node.exists, node.manifest = False, False
            node.problems.append(f"partition {node.uri} does not exist")
            return
        if not _exists(fs, f"{path}/{MANIFEST}"):
            node.manifest = False
            node.problems.append(
                f"partition {node.uri} has no {MANIFEST} (incomplete or not made by ml-tasks)"
            )
            return
        try:
            with fs.open_input_stream(f"{path}/{MANIFEST}") as stream:
                manifest = Manifest.from_json(stream.read().decode())
        except (ValueError, TypeError, OSError) as exc:
            node.manifest = False
            node.problems.append(f"{MANIFEST} of {node.uri} is unreadable: {exc}")
            return
        node.manifest = True
        outputs = [o for o in manifest.outputs if "uri" in o and "sha256" in o]
        node.files = {str(o["uri"]).rsplit("/", 1)[1]: str(o["sha256"]) for o in outputs}
        node.facts.update(_manifest_facts(node.kind, manifest))
        if self.verify_files:
            actual = {name: _sha256(fs, f"{path}/{name}") for name in node.files}
            ok = actual == node.files
            node.checks.append(_check("files vs own manifest", ok, node.files, actual, f"{MANIFEST}"))
            if not ok:
                node.problems.append(
                    f"files of {node.id} differ from its manifest: {_diff(node.files, actual)}"
                )
            node.facts["actual_files"] = actual
        if node.kind == "monitoring" and "decision.json" in node.files:
            with contextlib.suppress(OSError, ValueError):
                with fs.open_input_stream(f"{path}/decision.json") as stream:
                    decision = json.loads(stream.read().decode())
                if isinstance(decision, dict):
                    node.facts.update({k: decision.get(k) for k in ("verdict", "drift_share", "retrain")})
        if node.kind == "training_set":
            actual_files = node.facts.get("actual_files", node.files)
            # build_training_set: sha256 over the concatenated hex digests of the files, in output order
            names = [str(o["uri"]).rsplit("/", 1)[1] for o in outputs]
            node.facts["sha256"] = hashlib.sha256(
                "".join(str(actual_files.get(n)) for n in names).encode()
            ).hexdigest()
        for entry in manifest.inputs:
            if "model" in entry and isinstance(entry["model"], dict):
                node.children.append(self.model_from_record(entry["model"], node))
            elif isinstance(entry.get("reference"), dict):
                # monitoring: the drift reference stored with a model version (models:/<name>/<version>)
                reference = entry["reference"]
                node.facts["reference"] = reference
                found = _MODEL_VERSION.match(str(reference.get("uri", "")))
                if found:
                    child = self.model(found["name"], found["version"])
                    if child not in node.children:
                        node.children.append(child)
            elif "uri" in entry and "files" in entry:
                role = entry.get("role")
                if role in INTERMEDIATE_ROLES:
                    node.facts.setdefault("intermediates", {})[role] = {
                        "uri": entry["uri"],
                        "files": entry["files"],
                    }
                    continue
                child = self.partition(str(entry["uri"]), dict(entry["files"]), node.id)
                if child not in node.children:
                    node.children.append(child)
            else:
                # extract records the source it read (no files): the end of the chain
                node.facts.setdefault("sources", []).append(entry)

    # -- MLflow ------------------------------------------------------------------------------------
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

    def model_from_record(self, record: dict[str, Any], consumer: _Node) -> str:
        name, version = str(record.get("name")), str(record.get("version"))
        node_id = self.model(name, version)
        node = self.nodes[node_id]
        if node.exists and node.facts:
            for key, tag in (("onnx_sha256", TAG_ONNX_SHA256), ("feature_service", TAG_FEATURE_SERVICE)):
                if key in record:
                    have = node.facts.get("tags", {}).get(tag)
                    node.checks.append(
                        _check(f"{key} of {consumer.id}", have == record[key], record[key], have, consumer.id)
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
            text = f"model version {name}/{alias or version} not found in the registry: {_short(exc)}"
            if target:
                raise LineageError(text) from exc
            node_id = f"models:/{name}/{version}"
            return self._missing(node_id, MODEL, node_id, text)
        node_id = info.uri
        if node_id in self.nodes:
            return node_id
        node = _Node(id=node_id, kind=MODEL, uri=info.uri)
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
        self, ts: _Node, expected: str | None, model_id: str, run_node: _Node | None
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
        ts.checks.append(_check("training-set sha256 vs model tag", ok, expected, actual, model_id))
        if not ok:
            ts.problems.append(
                f"training set sha256 {actual} differs from {expected} recorded by {model_id}: the model was"
                " trained on other data than the partition holds now"
            )

    def run(self, client: MlflowClient, run_id: str) -> str:
        node_id = f"runs:/{run_id}"
        if node_id in self.nodes:
            return node_id
        try:
            run = client.get_run(run_id)
        except Exception as exc:
            return self._missing(node_id, RUN, node_id, f"MLflow run {run_id} not found: {_short(exc)}")
        experiment: str | None = None
        try:
            experiment = client.get_experiment(run.info.experiment_id).name
        except Exception as exc:  # the run is what matters; a vanished experiment is only reported
            log.debug("experiment %s of run %s: %s", run.info.experiment_id, run_id, exc)
        tags = dict(run.data.tags)
        node = _Node(id=node_id, kind=RUN, uri=node_id)
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
            self.nodes[node_id] = _Node(id=node_id, kind=kind, uri=uri, exists=False, problems=[problem])
        return node_id


# -- helpers -----------------------------------------------------------------------------------------
def _exists(fs: pafs.FileSystem, path: str) -> bool:
    return bool(fs.get_file_info(path).type != pafs.FileType.NotFound)


def _sha256(fs: pafs.FileSystem, path: str) -> str | None:
    return file_sha256(path, fs) if _exists(fs, path) else None


def _diff(expected: dict[str, Any], actual: dict[str, Any]) -> str:
    names = sorted(set(expected) | set(actual))
    parts = [
        f"{n}: {str(expected.get(n))[:12]} != {str(actual.get(n))[:12]}"
        for n in names
        if expected.get(n) != actual.get(n)
    ]
    return "; ".join(parts)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _ms(value: int | None) -> str | None:
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC).isoformat(timespec="seconds") if value else None


def _manifest_facts(kind: str, m: Manifest) -> dict[str, Any]:
    """The few facts of a partition a reader needs, by kind (everything is in the manifest itself)."""
    rc, p = m.row_counts, m.params
    facts: dict[str, Any] = {"step": m.step, "code_version": m.code_version, "rows": rc.get("rows")}
    if kind == "predictions":
        model: dict[str, Any] = next((i["model"] for i in m.inputs if isinstance(i.get("model"), dict)), {})
        facts.update(
            interval=p.get("interval"),
            threshold=p.get("threshold"),
            feature_service=p.get("feature_service"),
            shards=p.get("shards"),
            missing_features=rc.get("missing_features"),
            model=model,
        )
    elif kind == "training_set":
        facts.update(
            feature_service=p.get("feature_service"),
            interval=p.get("interval"),
            labelled=rc.get("labelled"),
            positives=rc.get("positives"),
            label_rate=p.get("label_rate"),
        )
    elif kind == "features":
        facts.update(
            view=p.get("view"), window_days=rc.get("window_days"), event_timestamp=p.get("event_timestamp")
        )
    elif kind == "curated":
        facts.update(
            rows=rc.get("curated"),
            raw_rows=rc.get("raw"),
            quarantined=rc.get("quarantined"),
            validation_report=(p.get("reports") or {}).get("index"),
        )
    elif kind == "raw":
        facts.update(source=p.get("source"), rows_without_timestamp=rc.get("rows_without_timestamp"))
    elif kind == "monitoring":
        facts.update(model=p.get("model"), model_version=p.get("model_version"), interval=p.get("interval"))
    else:
        facts["row_counts"] = rc
    return facts


# -- the target ----------------------------------------------------------------------------------------
def _partition_target(tracer: _Tracer, target: str) -> str:
    """The URI of a partition target: a path/URI, or a path relative to the data root."""
    text = target.strip().rstrip("/")
    for tail in (f"/{MANIFEST}",):
        text = text.removesuffix(tail)
    if text.endswith(".parquet"):
        text = text.rsplit("/", 1)[0]
    if text.startswith("file://"):
        text = text.removeprefix("file://")
    candidates: list[str] = []
    if "://" in text or text.startswith("/"):
        candidates.append(text)
    else:
        candidates.append(tracer.root.uri(f"{tracer.root.base}/{text}"))
        candidates.append(str(Path(text).resolve()))
    for uri in candidates:
        fs, path = tracer.locate(uri)
        if _exists(fs, path):
            if tracer.rel(path) is None:
                raise LineageError(
                    f"lineage target {target!r}: {uri} is not a partition of a data root"
                    " (expected <layer>/<dataset>/<key>, e.g. predictions/taxi_tips/dt=2024-03-07)"
                )
            return uri
    raise LineageError(
        f"lineage target {target!r} does not exist: looked for {' and '.join(candidates)}"
        f" (data root {tracer.root.root}); give a predictions or training-set partition, or a model"
        " version like taxi_tips/3, models:/taxi_tips/3 or taxi_tips@champion"
    )


def trace(settings: Settings, target: str, *, verify_files: bool = True) -> dict[str, Any]:
    """The lineage of ``target`` down to the raw source partitions.

    Args:
        settings: Flywheel settings (data root; MLflow store for model links).
        target: A partition (path, URI, or ``<layer>/<dataset>/<key>`` relative to the data root): a
            predictions partition ``predictions/<model>/dt=D``, a training set
            ``training_sets/<service>/<start>_<end>``, or any other partition with a manifest; or a model
            version: ``taxi_tips/3``, ``models:/taxi_tips/3``, ``taxi_tips@champion``.
        verify_files: Hash every file reached again and compare with the manifests (off: compare the
            manifests' recorded hashes only).

    Returns:
        ``{"target", "root", "nodes": {id: node}, "summary"}``; a node has ``kind``, ``uri``, ``exists``,
        ``manifest``, ``status`` (verified / MISMATCH / unverified / None), ``facts``, ``files``,
        ``checks``, ``problems`` and ``children`` (node ids).

    Raises:
        LineageError: the target does not exist, or names a model version the registry does not have.
    """
    tracer = _Tracer(settings, verify_files)
    text = target.strip()
    version = _MODEL_VERSION.match(text)
    alias = _MODEL_ALIAS.match(text)
    if version or alias or text.startswith("models:/"):
        if version:
            root_id = tracer.model(version["name"], version["version"], target=True)
        elif alias:
            root_id = tracer.model(alias["name"], "", alias["alias"], target=True)
        else:
            raise LineageError(
                f"lineage target {target!r}: expected models:/<name>/<version> or <name>@<alias>"
            )
        kind = MODEL
    else:
        uri = _partition_target(tracer, text)
        root_id = tracer.partition(uri, None, None)
        kind = tracer.nodes[root_id].kind
        if not tracer.nodes[root_id].manifest:
            raise LineageError(f"lineage target {target!r}: {tracer.nodes[root_id].problems[0]}")
    nodes = {i: tracer.nodes[i] for i in _order(tracer.nodes, root_id)}
    for n in nodes.values():
        n.children.sort(key=lambda c: (RANK.get(tracer.nodes[c].kind, 99), c))
    counts = Counter(n.kind for n in nodes.values())
    summary = {
        "nodes": len(nodes),
        "by_kind": {k: counts[k] for k in sorted(counts, key=lambda k: RANK.get(k, 99))},
        "verified": sum(1 for n in nodes.values() if n.status() == VERIFIED),
        "mismatches": [n.id for n in nodes.values() if n.status() == MISMATCH],
        "missing": [n.id for n in nodes.values() if not n.exists or n.manifest is False],
        "problems": [f"{n.id}: {p}" for n in nodes.values() for p in n.problems],
        "raw_partitions": sorted(n.id for n in nodes.values() if n.kind == "raw" and n.exists),
    }
    summary["ok"] = not summary["mismatches"] and not summary["missing"] and not summary["problems"]
    return {
        "target": {"input": target, "kind": kind, "id": root_id},
        "root": root_id,
        "data_root": tracer.root.root,
        "verify_files": verify_files,
        "nodes": {i: n.to_dict() for i, n in nodes.items()},
        "summary": summary,
    }


def _order(nodes: dict[str, _Node], root: str) -> list[str]:
    """Node ids reachable from ``root``, depth first in the tree's child order."""
    seen: list[str] = []
    stack = [root]
    visited: set[str] = set()
    while stack:
        current = stack.pop()
        if current in visited:
            continue
        visited.add(current)
        seen.append(current)
        children = sorted(nodes[current].children, key=lambda c: (RANK.get(nodes[c].kind, 99), c))
        stack.extend(reversed(children))
    return seen


# -- text ------------------------------------------------------------------------------------------------
def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _short_sha(value: Any) -> str:
    return str(value)[:12] if value else "-"


def _label(node: dict[str, Any]) -> str:
    f, kind = node["facts"], node["kind"]
    if not node["exists"] or node["manifest"] is False:
        name = {MODEL: "model ", RUN: "run "}.get(kind, "")
        return f"{name}{node['id']}  [{'MISSING' if not node['exists'] else 'NO MANIFEST'}]"
    if kind == MODEL:
        aliases = "".join(f" @{a}" for a in f.get("aliases") or [])
        metrics = " ".join(f"{k}={v}" for k, v in sorted((f.get("metrics") or {}).items())[:3])
        bits = [
            f"model {node['id']}{aliases}",
            f"onnx {_short_sha(f.get('onnx_sha256'))}",
            f"service {f.get('feature_service')}",
            f"threshold {_num(f.get('threshold'))}",
            metrics,
            f"promotion {f['promotion']}" if f.get("promotion") else "",
        ]
    elif kind == RUN:
        bits = [
            f"run {f.get('run_id', node['id'])} (task {f.get('task_id')})",
            f"experiment {f.get('experiment')}",
            str(f.get("status")),
            f"dag {f.get('dag_id')} / {f.get('dag_run_id')}",
            f"code {f.get('code_version')}",
            f"started {f.get('start_time')}",
        ]
    else:
        bits = [node["id"], f"rows {f.get('rows')}" if "rows" in f else ""]
        if kind == "predictions":
            interval = f.get("interval") or {}
            model = f.get("model") or {}
            bits += [
                f"interval {interval.get('start')}..{interval.get('end')}",
                f"model {model.get('name')}/{model.get('version')}",
                f"threshold {_num(f.get('threshold'))}",
                f"missing features {f.get('missing_features')}",
            ]
        elif kind == "training_set":
            verdict = f.get("sha256_verdict")
            bits += [
                f"service {f.get('feature_service')}",
                f"label rate {_num(f.get('label_rate'))}",
                f"sha256 {_short_sha(f.get('sha256'))}" + (f" {verdict}" if verdict else ""),
            ]
        elif kind == "features":
            bits += [f"window days {f.get('window_days')}"]
        elif kind == "monitoring":
            bits += [f"verdict {f.get('verdict')}", f"drift share {_num(f.get('drift_share'))}",
                     f"retrain {f.get('retrain')}"]  # fmt: skip
        elif kind == "curated":
            bits += [f"raw {f.get('raw_rows')}", f"quarantined {f.get('quarantined')}"]
        elif kind == "raw":
            sources = f.get("sources") or [{}]
            extra = {
                k: v for k, v in sources[0].items() if k in ("seed", "trips_per_day", "path", "url", "table")
            }
            bits += [f"source {f.get('source')}"] + [f"{k} {v}" for k, v in extra.items()]
        if node["files"]:
            bits.append("files " + ", ".join(f"{n} {_short_sha(s)}" for n, s in node["files"].items()))
    mark = f"[{node['status']}]" if node["status"] else ""
    return "  ".join(b for b in [*bits, mark] if b)


def _ranges(ids: list[str]) -> str:
    """``curated/trips dt=2024-03-04..2024-03-06 (3)`` for ids of one dataset (consecutive days merged)."""
    groups: dict[str, list[str]] = {}
    for i in ids:
        base, _, key = i.rpartition("/")
        groups.setdefault(base or i, []).append(key)
    out = []
    for base, keys in groups.items():
        days = sorted(keys)
        parsed = [_day(k) for k in days]
        if all(d is not None for d in parsed):
            spans: list[list[dt.date]] = []
            for d in sorted(x for x in parsed if x is not None):
                if spans and d - spans[-1][-1] == dt.timedelta(days=1):
                    spans[-1].append(d)
                else:
                    spans.append([d])
            text = ", ".join(s[0].isoformat() if len(s) == 1 else f"{s[0]}..{s[-1]}" for s in spans)
            out.append(f"{base} dt={text} ({len(days)})")
        else:
            out.append(", ".join(f"{base}/{k}" for k in days))
    return "; ".join(out)


def _day(key: str) -> dt.date | None:
    try:
        return dt.date.fromisoformat(key.removeprefix("dt="))
    except ValueError:
        return None


def _owners(nodes: dict[str, dict[str, Any]], root: str) -> dict[str, str]:
    """For each node, the parent under which the tree shows it whole: its first parent in preorder."""
    owner: dict[str, str] = {}
    seen = {root}

    def visit(node_id: str) -> None:
        for child in nodes[node_id]["children"]:
            if child not in seen:
                seen.add(child)
                owner[child] = node_id
                visit(child)

    visit(root)
    return owner


def _dataset(node_id: str) -> str | None:
    """``<layer>/<dataset>`` of a daily partition id (``.../dt=YYYY-MM-DD``); None for anything else."""
    base, _, key = node_id.rpartition("/")
    return base if base and _day(key) is not None else None


def _group_label(members: list[dict[str, Any]]) -> str:
    """One line for several daily partitions of one dataset: days, rows, statuses (problems named)."""
    rows = [m["facts"].get("rows") for m in members]
    total = sum(r for r in rows if isinstance(r, int))
    bits = [_ranges([m["id"] for m in members]), f"rows {total}"]
    sources = sorted({str(m["facts"].get("source")) for m in members if m["facts"].get("source")})
    if sources:
        bits.append(f"source {', '.join(sources)}")
    bad = {
        "MISSING": [m for m in members if not m["exists"]],
        "NO MANIFEST": [m for m in members if m["exists"] and m["manifest"] is False],
        MISMATCH: [m for m in members if m["exists"] and m["status"] == MISMATCH],
    }
    verified = sum(1 for m in members if m["status"] == VERIFIED)
    marks = [f"{verified} {VERIFIED}"] if verified else []
    marks += [f"{what}: {_ranges([m['id'] for m in found])}" for what, found in bad.items() if found]
    return "  ".join([*bits, f"[{'; '.join(marks)}]"])


def render_text(trace: dict[str, Any], *, expand: bool = False, group_min: int = 4) -> str:
    """An indented tree a human reads in seconds: a summary line and the problems first, then the chain.

    Each node is shown once (later references are collapsed into one "(shown above)" line). Sibling daily
    partitions of one dataset (the 28 curated days of a training window) are folded into one line with
    their day ranges, total rows and statuses when there are at least ``group_min`` of them, unless
    ``expand``; the JSON form always has every node, its facts and file hashes.
    """
    nodes: dict[str, dict[str, Any]] = trace["nodes"]
    s = trace["summary"]
    kinds = ", ".join(f"{n} {k}" for k, n in s["by_kind"].items())
    verdict = (
        "all links verified"
        if s["ok"]
        else f"{len(s['mismatches'])} MISMATCH, {len(s['missing'])} missing, {len(s['problems'])} problem(s)"
    )
    lines = [f"lineage of {trace['target']['input']}: {s['nodes']} nodes ({kinds}); {verdict}"]
    if s["problems"]:
        lines += [f"  ! {p}" for p in s["problems"][:MAX_PROBLEMS_SHOWN]]
        if len(s["problems"]) > MAX_PROBLEMS_SHOWN:
            lines.append(f"  ! ... {len(s['problems']) - MAX_PROBLEMS_SHOWN} more (see the JSON output)")
    owner = _owners(nodes, trace["root"])

    def items_of(children: list[str]) -> list[list[str]]:
        """Children as display items: single nodes, or groups of daily partitions of one dataset."""
        groups: dict[str, list[str]] = {}
        for child in children:
            groups.setdefault(_dataset(child) or child, []).append(child)
        out: list[list[str]] = []
        for members in groups.values():
            if expand or len(members) < group_min:
                out += [[m] for m in members]
            else:
                out.append(members)
        return out

    def walk(members: list[str], prefix: str, connector: str) -> None:
        label = _label(nodes[members[0]]) if len(members) == 1 else _group_label([nodes[m] for m in members])
        lines.append(f"{prefix}{connector}{label}")
        child_prefix = "" if not connector else prefix + ("    " if connector == "└── " else "│   ")
        mine = set(members)
        fresh: list[str] = []
        refs: list[str] = []
        for member in members:
            for c in nodes[member]["children"]:
                target = fresh if owner.get(c) in mine else refs
                if c not in fresh and c not in refs and c not in mine:
                    target.append(c)
        fresh.sort(key=lambda c: (RANK.get(nodes[c]["kind"], 99), c))
        items: list[list[str] | None] = [*items_of(fresh), *([None] if refs else [])]
        for i, item in enumerate(items):
            conn = "└── " if i == len(items) - 1 else "├── "
            if item is None:
                lines.append(f"{child_prefix}{conn}(shown above) {_ranges(sorted(refs))}")
            else:
                walk(item, child_prefix, conn)

    walk([trace["root"]], "", "")
    return "\n".join(lines) + "\n"
