"""The Flywheel view reads champion and challenger from a real MLflow tracking server's REST API."""

from __future__ import annotations

import sys
from pathlib import Path

from ml_tasks.contract import CHALLENGER, CHAMPION, TAG_DECISION, TAG_METRIC, TAG_REASONS
from ml_tasks.models.version_tags import tag_value
from tests.integration._servers.mlflow import MlflowServer

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def test_registry_lists_aliased_versions_with_metrics_and_gate_reasons(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    sys.path.insert(0, str(PLUGINS))
    try:
        from flywheel_ui import cockpit
    finally:
        sys.path.remove(str(PLUGINS))
    # the plugin cannot import ml_tasks: its copies of the tag names must match the contract
    assert (
        f"{TAG_METRIC}.",
        TAG_DECISION,
        TAG_REASONS,
    ) == (cockpit.TAG_METRIC_PREFIX, cockpit.TAG_DECISION, cockpit.TAG_REASONS)
    server = MlflowServer(tmp_path / "mlflow").start()
    url = server.url
    try:
        client = MlflowClient(tracking_uri=url, registry_uri=url)
        client.create_registered_model("taxi_tips")
        for version, auc in (("1", 0.91), ("2", 0.93)):
            client.create_model_version("taxi_tips", source=f"s3://flywheel-test/models/{version}")
            client.set_model_version_tag("taxi_tips", version, f"{TAG_METRIC}.roc_auc", f"{auc:.6g}")
        client.set_model_version_tag("taxi_tips", "2", TAG_DECISION, "promoted")
        client.set_model_version_tag("taxi_tips", "2", TAG_REASONS, tag_value(["roc_auc 0.9300 beats tree"]))
        client.set_registered_model_alias("taxi_tips", CHAMPION, "2")
        client.set_registered_model_alias("taxi_tips", CHALLENGER, "1")

        state = cockpit.registry(url)
        down = cockpit.registry(url.rsplit(":", 1)[0] + ":9")  # nothing listens on port 9
    finally:
        server.stop()

    assert state == {
        "models": [
            {
                "name": "taxi_tips",
                "aliases": [
                    {"alias": CHALLENGER, "version": "1", "run_id": None, "metrics": {"roc_auc": "0.91"},
                     "decision": None, "reasons": []},
                    {"alias": CHAMPION, "version": "2", "run_id": None, "metrics": {"roc_auc": "0.93"},
                     "decision": "promoted", "reasons": ["roc_auc 0.9300 beats tree"]},
                ],
            }
        ]
    }  # fmt: skip
    assert down["error"].startswith("MLflow registry at http://127.0.0.1:9 not readable: ")
    assert cockpit.registry("sqlite:////tmp/x.db") == {
        "error": "MLflow is not a tracking server here (set MLFLOW_TRACKING_URI to its http URL)"
    }
