"""The walk: from a target partition or model version down to the raw partitions, every hash checked.

Partition links come from each partition's ``_manifest.json`` (``inputs`` entries with the sha256 of each
file as it was read); model links from the registry (:mod:`ml_tasks.lineage.model_links`). A broken link
becomes a node with ``exists: false`` and a problem; only a target that does not exist raises.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from ml_tasks.contract import DECISION_JSON, MANIFEST, training_set_digest
from ml_tasks.lineage.model_links import MODEL_ALIAS, MODEL_VERSION, ModelLinks
from ml_tasks.lineage.nodes import (
    KIND_BY_LAYER,
    MISMATCH,
    MODEL,
    RANK,
    VERIFIED,
    LineageError,
    Node,
    check,
    diff,
    exists,
    sha256,
)
from ml_tasks.lineage.records import (
    ManifestRecord,
    ModelInput,
    PartitionInput,
    ReferenceInput,
    read_decision,
    read_manifest,
)
from ml_tasks.settings import Settings
from ml_tasks.storage import ContractFileError, DataRoot

# curated manifests record the intermediate partitions of the ingest with these roles: facts, not links
INTERMEDIATE_ROLES = ("staging", "accepted", "quarantine", "validation_report")


class Tracer:
    """One walk: the node table (deduplicated by id), file access, and the model links."""

    def __init__(self, settings: Settings, verify_files: bool) -> None:
        self.root = DataRoot(settings.data_root)
        self.verify_files = verify_files
        self.nodes: dict[str, Node] = {}
        self.models = ModelLinks(settings, self.nodes, self.partition)

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
        if exists(fs, path):
            return fs, path, False
        rel = self.rel(path)
        if rel is not None:
            here = f"{self.root.base}/{rel}"
            if exists(self.root.fs, here):
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
            node = Node(id=node_id, kind=KIND_BY_LAYER.get(layer, "partition"), uri=uri)
            self.nodes[node_id] = node
            if relocated:
                node.facts["found_at"] = path
            self._read_partition(node, fs, path)
        if recorded is not None and node.exists and node.manifest:
            mine = node.files
            ok = recorded == mine
            node.checks.append(check("files read by consumer", ok, recorded, mine, consumer or "?"))
            if not ok:
                node.problems.append(
                    f"{consumer} read other files than {node.id} holds now: {diff(recorded, mine)}"
                    " (the partition was rewritten after it was read)"
                )
        return node_id

    def _read_partition(self, node: Node, fs: pafs.FileSystem, path: str) -> None:
        if not exists(fs, path):
            node.exists, node.manifest = False, False
            node.problems.append(f"partition {node.uri} does not exist")
            return
        if not exists(fs, f"{path}/{MANIFEST}"):
            node.manifest = False
            node.problems.append(
                f"partition {node.uri} has no {MANIFEST} (incomplete or not made by ml-tasks)"
            )
            return
        try:
            with fs.open_input_stream(f"{path}/{MANIFEST}") as stream:
                manifest = read_manifest(stream.read(), f"{MANIFEST} of {node.uri}")
        except ContractFileError as exc:
            node.manifest = False
            node.problems.append(str(exc))
            return
        except OSError as exc:
            node.manifest = False
            node.problems.append(f"{MANIFEST} of {node.uri} is unreadable: {exc}")
            return
        node.manifest = True
        node.files = manifest.files()
        node.facts.update(_manifest_facts(node.kind, manifest))
        if self.verify_files:
            actual = {name: sha256(fs, f"{path}/{name}") for name in node.files}
            ok = actual == node.files
            node.checks.append(check("files vs own manifest", ok, node.files, actual, f"{MANIFEST}"))
            if not ok:
                node.problems.append(
                    f"files of {node.id} differ from its manifest: {diff(node.files, actual)}"
                )
            node.facts["actual_files"] = actual
        if node.kind == "monitoring" and DECISION_JSON in node.files:
            self._read_decision(node, fs, path)
        if node.kind == "training_set":
            actual_files = node.facts.get("actual_files", node.files)
            # the digest build_training_set records, over the files as they are now
            node.facts["sha256"] = training_set_digest({"sha256": actual_files.get(n)} for n in node.files)
        self._follow_inputs(node, manifest)

    def _read_decision(self, node: Node, fs: pafs.FileSystem, path: str) -> None:
        try:
            with fs.open_input_stream(f"{path}/{DECISION_JSON}") as stream:
                decision = read_decision(stream.read(), f"{DECISION_JSON} of {node.uri}")
        except OSError:
            return  # a file gone behind the manifest: already a MISMATCH of its files
        except ContractFileError as exc:
            node.problems.append(str(exc))
            return
        node.facts.update(
            verdict=decision.verdict, drift_share=decision.drift.drift_share, retrain=decision.retrain
        )

    def _follow_inputs(self, node: Node, manifest: ManifestRecord) -> None:
        for entry in manifest.inputs:
            if isinstance(entry, ModelInput):
                node.children.append(self.models.from_record(entry.model.as_written(), node))
            elif isinstance(entry, ReferenceInput):
                # monitoring: the drift reference stored with a model version (models:/<name>/<version>)
                node.facts["reference"] = entry.reference.as_written()
                found = MODEL_VERSION.match(entry.reference.uri)
                if found:
                    child = self.models.model(found["name"], found["version"])
                    if child not in node.children:
                        node.children.append(child)
            elif isinstance(entry, PartitionInput):
                if entry.role in INTERMEDIATE_ROLES:
                    node.facts.setdefault("intermediates", {})[entry.role] = {
                        "uri": entry.uri,
                        "files": entry.files,
                    }
                    continue
                child = self.partition(entry.uri, dict(entry.files), node.id)
                if child not in node.children:
                    node.children.append(child)
            else:
                # extract records the source it read (no files): the end of the chain
                node.facts.setdefault("sources", []).append(entry.as_written())


def _manifest_facts(kind: str, m: ManifestRecord) -> dict[str, Any]:
    """The few facts of a partition a reader needs, by kind (everything is in the manifest itself)."""
    rc, p = m.row_counts, m.params
    facts: dict[str, Any] = {"step": m.step, "code_version": m.code_version, "rows": rc.get("rows")}
    if kind == "predictions":
        model = next((i.model.as_written() for i in m.inputs if isinstance(i, ModelInput)), {})
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
def _partition_target(tracer: Tracer, target: str) -> str:
    """The URI of a partition target: a path/URI, or a path relative to the data root."""
    text = target.strip().rstrip("/").removesuffix(f"/{MANIFEST}")
    if text.endswith(".parquet"):
        text = text.rsplit("/", 1)[0]
    text = text.removeprefix("file://")
    candidates: list[str] = []
    if "://" in text or text.startswith("/"):
        candidates.append(text)
    else:
        candidates.append(tracer.root.uri(f"{tracer.root.base}/{text}"))
        candidates.append(str(Path(text).resolve()))
    for uri in candidates:
        fs, path = tracer.locate(uri)
        if exists(fs, path):
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
        LineageError: the target does not exist, its manifest is corrupt, or it names a model version the
            registry does not have.
    """
    tracer = Tracer(settings, verify_files)
    text = target.strip()
    version = MODEL_VERSION.match(text)
    alias = MODEL_ALIAS.match(text)
    if version or alias or text.startswith("models:/"):
        if version:
            root_id = tracer.models.model(version["name"], version["version"], target=True)
        elif alias:
            root_id = tracer.models.model(alias["name"], "", alias["alias"], target=True)
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


def _order(nodes: dict[str, Node], root: str) -> list[str]:
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
