"""The two images, built by ``make images`` (scripts/images/build.sh), run for real with buildah.

ml-tasks: ``--help`` and the chain extract (synthetic, one day) -> transform -> validate -> publish ->
build-features -> feature-apply -> training-set -> train (one tiny trial: torch, MLflow, caches) as uid
10001 on a mounted data root with the code folders read-only; the counts must equal the same argv run in
this process. airflow: the version, the chart's commands, every DAG
file through a DagBag with the kubernetes runner, and no heavy library in the image.
Skipped when buildah or the images are missing, unless FLYWHEEL_REQUIRE_IMAGES=1 (scripts/run_tests.sh sets
it after building them): then that is a failure.
"""

from __future__ import annotations

import json
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, run_cli
from tests.deploy._buildah import AIRFLOW_IMAGE, ML_TASKS_IMAGE, Container, buildah, container, missing_reason

STEP_UID = 10001  # dags/_lib/kube.py's runAsUser / runAsGroup default, and the chart's
AIRFLOW_USER = "50000:0"  # the official chart's convention
DAY, NEXT = "2024-01-01", "2024-01-02"
TRIPS = "500"
HEAVY = ("torch", "feast", "great_expectations", "evidently", "mlflow")
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def _image(image: str) -> str:
    reason = missing_reason(image)
    if reason:
        if os.environ.get("FLYWHEEL_REQUIRE_IMAGES") == "1":
            pytest.fail(f"FLYWHEEL_REQUIRE_IMAGES=1 but {reason}")
        pytest.skip(reason)
    return image


def _config(image: str) -> dict[str, Any]:
    inspected = json.loads(buildah("inspect", "--type", "image", image).stdout)
    config: dict[str, Any] = inspected["OCIv1"]["config"]
    return config


def _pin(package: str) -> str:
    pins = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith(f"{package}==")]
    return pins[0].split("==", 1)[1]


@pytest.fixture(scope="module")
def ml_tasks() -> Iterator[Container]:
    with container(_image(ML_TASKS_IMAGE), read_only=True) as ctr:
        yield ctr


@pytest.fixture(scope="module")
def airflow() -> Iterator[Container]:
    with container(_image(AIRFLOW_IMAGE)) as ctr:
        yield ctr


def _writable(path: Path, uid: int) -> Path:
    path.mkdir(parents=True)
    os.chown(path, uid, uid)
    return path


def test_ml_tasks_image_config() -> None:
    config = _config(_image(ML_TASKS_IMAGE))
    assert config["User"] == f"{STEP_UID}:{STEP_UID}"
    assert config["Entrypoint"] == ["ml-tasks"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]
    assert labels["org.opencontainers.image.source"].startswith("https://")
    env = dict(item.split("=", 1) for item in config["Env"])
    # every writable path of a read-only root is under /tmp (an emptyDir in pods)
    assert {env[k] for k in ("HOME", "TMPDIR")} == {"/tmp"}
    assert env["MPLCONFIGDIR"].startswith("/tmp/") and env["XDG_CACHE_HOME"].startswith("/tmp/")


def test_ml_tasks_help_and_no_build_tools(ml_tasks: Container) -> None:
    helped = ml_tasks.run(["ml-tasks", "--help"], user=f"{STEP_UID}:{STEP_UID}")
    assert helped.returncode == 0, helped.stderr
    for step in ("extract", "transform", "validate", "publish", "build-features", "train", "predict"):
        assert step in helped.stdout
    probe = "import shutil; print([t for t in ('uv', 'gcc', 'cc', 'pip') if shutil.which(t)])"
    found = ml_tasks.run(["python3", "-c", probe], user=f"{STEP_UID}:{STEP_UID}")
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == "[]"  # multi-stage: no uv, compiler or pip in the final image


def _step(ctr: Container, tmp: Path, data: Path, argv: list[str]) -> dict[str, Any]:
    done = ctr.run(
        ["ml-tasks", *argv],
        user=f"{STEP_UID}:{STEP_UID}",
        volumes={data: "/data", tmp: "/tmp"},
        env={"FLYWHEEL_DATA_ROOT": "/data", "MLFLOW_TRACKING_URI": ""},
    )
    assert done.returncode == 0, f"ml-tasks {argv[0]} failed in the image:\n{done.stderr[-3000:]}"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    summary: dict[str, Any] = json.loads(lines[-1])
    assert summary["step"] == argv[0]
    return summary


def test_ml_tasks_chain_in_image(ml_tasks: Container, tmp_path: Path, data_root: Path) -> None:
    data = _writable(tmp_path / "image-data", STEP_UID)  # the PVC, made writable by fsGroup in a pod
    scratch = tmp_path / "image-tmp"
    scratch.mkdir(mode=0o1777)
    scratch.chmod(0o1777)
    window = ["--start", DAY, "--end", NEXT]
    chain = [["extract", "--source", "synthetic", *window, "--trips-per-day", TRIPS]]
    chain += [[step, *window] for step in ("transform", "validate", "publish", "build-features")]
    chain += [["feature-apply"], ["training-set", *window]]
    got = {argv[0]: _step(ml_tasks, scratch, data, argv) for argv in chain}
    # torch, MLflow (file store under the data root) and their caches on the read-only root: one tiny run
    training_set = got["training-set"]["uri"]
    train = ["train", "--training-set", training_set, "--trials", "1", "--max-epochs", "1"]
    got["train"] = _step(ml_tasks, scratch, data, train)

    extracted, validated, published = got["extract"], got["validate"], got["publish"]
    assert extracted["rows_written"] > 0
    assert got["transform"]["rows"] == extracted["rows_written"]
    assert validated["rows_in"] == extracted["rows_written"]
    assert validated["accepted"] + validated["quarantined"] == validated["rows_in"]
    assert published["totals"] == {
        "raw": extracted["rows_written"],
        "curated": validated["accepted"],
        "quarantined": validated["quarantined"],
    }
    assert got["build-features"]["input_trips"] == validated["accepted"]
    assert got["build-features"]["rows"] > 0
    for summary in got.values():
        for part in summary.get("partitions", []):
            uris = [v for k, v in part.items() if k.endswith("uri")]
            assert uris and all(u.startswith("/data/") for u in uris), part
    applied = got["feature-apply"]
    assert applied["yaml"] == "/opt/flywheel/feature_repo/feature_store.yaml"  # the baked repo
    assert set(applied["feature_views"]) == {"pickup_area_stats", "company_stats"}
    assert got["training-set"]["rows"] == validated["accepted"] and training_set.startswith("/data/")
    trained = got["train"]
    assert trained["device"] == "cpu" and trained["run_id"] and trained["bundle"].startswith("/data/")
    assert trained["reference"]["rows"] == validated["accepted"]

    # the files landed on the mounted data root, owned by the step's uid
    curated = data / "curated" / "trips" / f"dt={DAY}"
    assert curated.is_dir() and curated.stat().st_uid == STEP_UID
    # same argv, same code and lock, in this process: the same numbers
    for argv in chain[:5]:
        local = run_cli(*argv)
        for key in ("rows_written", "rows", "accepted", "quarantined", "totals", "input_trips"):
            assert local.get(key) == got[argv[0]].get(key), (argv[0], key)


def test_airflow_image_config() -> None:
    config = _config(_image(AIRFLOW_IMAGE))
    assert config["User"] == AIRFLOW_USER
    assert not config.get("Entrypoint")  # the chart's args are the command
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["AIRFLOW_HOME"] == "/opt/airflow"
    assert config["Labels"]["org.opencontainers.image.version"] == PYPROJECT["project"]["version"]


def test_airflow_version_and_chart_commands(airflow: Container) -> None:
    version = airflow.run(["airflow", "version"], user=AIRFLOW_USER)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip().splitlines()[-1] == _pin("apache-airflow")
    who = airflow.run(["bash", "-c", "id -u; id -g; command -v airflow python bash"], user=AIRFLOW_USER)
    assert who.returncode == 0, who.stderr
    venv = "/opt/airflow-venv/bin"
    assert who.stdout.split() == ["50000", "0", f"{venv}/airflow", f"{venv}/python", "/usr/bin/bash"], (
        who.stdout
    )
    # the commands the official chart runs (the KubernetesExecutor's worker pods run execute_workload)
    probe = (
        "for c in 'db migrate' scheduler api-server dag-processor triggerer; do"
        " airflow $c --help >/dev/null || exit 1; done;"
        " python -c 'import airflow.sdk.execution_time.execute_workload'"
    )
    commands = airflow.run(["bash", "-c", probe], user=AIRFLOW_USER)
    assert commands.returncode == 0, commands.stderr[-2000:]


_DAGBAG = """
import json, importlib.util
from airflow.dag_processing.dagbag import BundleDagBag
bag = BundleDagBag(dag_folder="/opt/airflow/dags", bundle_path="/opt/airflow/dags")
heavy = [m for m in %r if importlib.util.find_spec(m) is not None]
print(json.dumps({"dags": sorted(bag.dag_ids), "errors": bag.import_errors, "heavy": heavy}))
"""


def test_airflow_dagbag_without_heavy_libraries(airflow: Container) -> None:
    env = {
        "FLYWHEEL_RUNNER": "kubernetes",
        "FLYWHEEL_K8S_IMAGE": "ghcr.io/example/flywheel-ml-tasks:0.1.0",
        "FLYWHEEL_DATA_ROOT": "/data",
        "FLYWHEEL_K8S_DATA_PVC": "flywheel-data",
    }
    done = airflow.run(["python", "-c", _DAGBAG % (HEAVY,)], user=AIRFLOW_USER, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == {}
    assert result["heavy"] == []
    expected = {p.stem for p in (REPO / "dags").glob("*.py")}
    assert set(result["dags"]) == expected and len(expected) >= 5


def test_airflow_requirements_match_pyproject() -> None:
    pinned = [
        line.strip()
        for line in (REPO / "docker" / "airflow" / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    deps = set(PYPROJECT["project"]["dependencies"])
    assert pinned and all(pin in {d.split("#")[0].strip() for d in deps} for pin in pinned), pinned
