"""A small, real pipeline data root shared by the prediction, monitoring and lineage tests.

Built once per test run through the real CLI (in-process ``run_cli``, the DAGs' argv; no Airflow):
synthetic trips for :data:`DAYS` days (:data:`TRIPS` a day) through extract -> transform -> validate ->
publish -> build-features, the Feast registry, a training set of the first :data:`TRAIN_DAYS` days, an
eval set of the next day, one small model (1 trial, :data:`EPOCHS` epochs) exported to ONNX, checked,
registered and promoted to ``taxi_tips@champion`` (forced: on tiny synthetic data the gate may prefer a
baseline). The days after the eval day have curated trips and features but no predictions: the tests
score them.

Use the ``pipeline_root`` fixture (tests/integration/conftest.py; under pytest-xdist each worker gets its
own copy of the one built root); treat the root as read-only except for your own prediction/monitoring
outputs, and prefer copying it (``PipelineRoot.copy_to``) when a test breaks things on purpose.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tests.conftest import run_cli

FIRST = dt.date(2024, 4, 1)
DAYS = 7
TRAIN_DAYS = 4
TRIPS = 1500
EPOCHS = 2
MODEL = "taxi_tips"
RUN = "fixture_run"


def day(offset: int) -> dt.date:
    """The fixture's ``offset``-th day."""
    return FIRST + dt.timedelta(days=offset)


@dataclass(frozen=True)
class PipelineRoot:
    """What the fixture built: its environment (for ``run_cli``) and the results of each step."""

    env: dict[str, str]
    training_set: dict[str, Any]
    eval_set: dict[str, Any]
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def data_root(self) -> Path:
        return Path(self.env["FLYWHEEL_DATA_ROOT"])

    @property
    def version(self) -> str:
        """The champion's registered version."""
        return str(self.steps["register"]["version"])

    @property
    def bundle(self) -> Path:
        return Path(self.steps["train"]["bundle"])

    @property
    def unscored_days(self) -> list[dt.date]:
        """Days with curated trips and features after the eval day (nothing scored them yet)."""
        return [day(i) for i in range(TRAIN_DAYS + 1, DAYS)]

    def to_json(self) -> str:
        """The fixture's results as JSON (handed from the xdist worker that built it to the others)."""
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> PipelineRoot:
        return cls(**json.loads(text))

    def copy_to(self, target: Path) -> PipelineRoot:
        """A private copy of the data root (MLflow's SQLite store and artifacts included).

        MLflow records artifact locations as absolute paths, so the copy's registry still points at the
        original's artifacts: fine for reading, never modify them. The copy's Feast registry is re-applied
        (the copied one names the original root's feature files, and the steps refuse a stale registry).
        """
        shutil.copytree(self.data_root, target)
        copy = replace(self, env={**self.env, "FLYWHEEL_DATA_ROOT": str(target)})
        run_cli("feature-apply", env=copy.env)
        return copy


def _tracking(task: str) -> list[str]:
    return ["--dag-id", "fixture", "--dag-run-id", RUN, "--task-id", task]


def build_pipeline_root(base: Path) -> PipelineRoot:
    """Run the pipeline's CLI steps into ``base / "data"`` (about 1-2 minutes on 2 cores)."""
    env = {
        "FLYWHEEL_DATA_ROOT": str(base / "data"),
        "FLYWHEEL_CODE_VERSION": "test",
        "FLYWHEEL_TRAIN_THREADS": "1",
        "MLFLOW_TRACKING_URI": "",
    }
    start, end = day(0).isoformat(), day(DAYS).isoformat()
    run_cli("extract", "--source", "synthetic", "--start", start, "--end", end,
            "--trips-per-day", str(TRIPS), env=env)  # fmt: skip
    for step in ("transform", "validate", "publish", "build-features"):
        run_cli(step, "--start", start, "--end", end, env=env)
    run_cli("feature-apply", env=env)
    train_end, eval_end = day(TRAIN_DAYS).isoformat(), day(TRAIN_DAYS + 1).isoformat()
    train_set = run_cli("training-set", "--start", start, "--end", train_end, env=env)
    eval_set = run_cli("training-set", "--start", train_end, "--end", eval_end, env=env)
    steps: dict[str, dict[str, Any]] = {}
    steps["train"] = run_cli("train", "--training-set", train_set["uri"], "--trials", "1",
                             "--max-epochs", str(EPOCHS), *_tracking("train"), env=env)  # fmt: skip
    bundle = ["--bundle", steps["train"]["bundle"]]
    steps["evaluate"] = run_cli("evaluate", *bundle, "--training-set", train_set["uri"],
                                "--eval-set", eval_set["uri"], *_tracking("evaluate"), env=env)  # fmt: skip
    steps["export"] = run_cli("export-onnx", *bundle, "--eval-set", eval_set["uri"],
                              *_tracking("export-onnx"), env=env)  # fmt: skip
    steps["check"] = run_cli("check-onnx", *bundle, "--eval-set", eval_set["uri"],
                             *_tracking("check-onnx"), env=env)  # fmt: skip
    steps["register"] = run_cli("register", *bundle, *_tracking("register"), env=env)
    steps["promote"] = run_cli("promote", *bundle, "--force", "--force-reason", "test fixture champion",
                               *_tracking("promote"), env=env)  # fmt: skip
    assert steps["promote"]["promoted"] is True, steps["promote"]
    return PipelineRoot(env=env, training_set=train_set, eval_set=eval_set, steps=steps)
