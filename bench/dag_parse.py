"""DAG parse time: each file of dags/ parsed as the dag-processor parses it, after airflow.sdk is imported.

Two measures per file, both after ``airflow.sdk``, the DagBag and the ``airflow.*`` modules the file names
are imported (the dag-processor pre-imports those, then forks a process per file):

* cold (the figure): a fresh interpreter per file, as the dag-processor's fork has it: third-party modules
  the file pulls through dags/_lib (the ``task`` decorator's chain, pydantic models, ...) and first-use
  costs count; median of ``--repeat`` runs, and its imports (``-X importtime``, in the note);
* warm (in the note): one interpreter parses every file once, then ``--repeat`` rounds of each file with
  dags/_lib dropped from ``sys.modules`` before it (as tests/dags' parse probe does): the file's own cost
  once everything third-party is loaded.

The floor is the same parse of a minimal DAG file (one EmptyOperator, no _lib). Goal (issue 17): <= 50 ms
per file.

Usage: python bench/dag_parse.py [--repeat 5] [--bound-ms 400]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py`: import bench._results

from bench._results import Figure, emit

REPO = Path(__file__).resolve().parents[1]
DAGS = REPO / "dags"
GOAL_MS = 50.0
#: the floor: the least a DAG file costs to parse (one DAG, one task of a standard operator)
MINIMAL_DAG = '''"""A minimal DAG: the parse floor."""
import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

with DAG("minimal", schedule=None, start_date=pendulum.datetime(2024, 1, 1), tags=["bench"]):
    EmptyOperator(task_id="noop")
'''
WARM_PROBE = """
import json, sys, time
from pathlib import Path
import airflow.sdk
from airflow.dag_processing.dagbag import BundleDagBag
paths, rounds = [Path(p) for p in sys.argv[1].split(",")], int(sys.argv[2])
def parse(path):
    for module in [m for m in sys.modules if m == "_lib" or m.startswith("_lib.")]:
        del sys.modules[module]
    t0 = time.perf_counter()
    bag = BundleDagBag(dag_folder=str(path), bundle_path=path.parent)
    assert len(bag.dags) == 1 and not bag.import_errors, (path, bag.import_errors)
    return time.perf_counter() - t0
for path in paths:
    parse(path)
print(json.dumps({p.name: [parse(p) for _ in range(rounds)] for p in paths}))
"""
PROBE = """
import json, resource, sys, time
from pathlib import Path
import airflow.sdk
from airflow.dag_processing.dagbag import BundleDagBag
from airflow.utils.file import iter_airflow_imports
path = Path(sys.argv[1])
for module in iter_airflow_imports(str(path)):  # the dag-processor's parsing_pre_import_modules
    __import__(module)
print("--- parse ---", file=sys.stderr, flush=True)
t0 = time.perf_counter()
bag = BundleDagBag(dag_folder=str(path), bundle_path=path.parent)
seconds = time.perf_counter() - t0
print(json.dumps({"seconds": seconds, "dags": sorted(bag.dags), "errors": len(bag.import_errors),
    "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def parse(path: Path, importtime: bool = False) -> tuple[dict[str, float], str]:
    """One parse of ``path`` in a fresh interpreter: its summary, and stderr after the marker."""
    argv = [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", PROBE, str(path)]
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, env=env, timeout=300, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench/dag_parse: {path.name} failed: {proc.stderr[-1500:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["errors"] or len(result["dags"]) != 1:
        raise SystemExit(f"bench/dag_parse: {path.name}: import errors or not one DAG: {result}")
    return result, proc.stderr.split("--- parse ---", 1)[-1]


def own_imports_ms(stderr: str) -> float:
    """Milliseconds of the top-level imports a parse made (``-X importtime`` after the marker)."""
    total = 0
    for line in stderr.splitlines():
        if line.startswith("import time:") and "cumulative" not in line:
            _, cumulative, name = line.split("|")
            if name.startswith(" ") and not name.startswith("  "):
                total += int(cumulative)
    return total / 1000


def warm(paths: list[Path], repeat: int) -> dict[str, float]:
    """Median warm parse ms per file (one interpreter; dags/_lib dropped before each parse)."""
    argv = [sys.executable, "-c", WARM_PROBE, ",".join(str(p) for p in paths), str(repeat)]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=600, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench/dag_parse: warm parse failed: {proc.stderr[-1500:]}")
    times = json.loads(proc.stdout.strip().splitlines()[-1])
    return {name: statistics.median(seconds) * 1000 for name, seconds in times.items()}


def measure(path: Path, repeat: int) -> tuple[float, float, float]:
    """(median parse ms, max peak RSS MiB, import ms of one ``-X importtime`` run)."""
    runs = [parse(path)[0] for _ in range(repeat)]
    _, stderr = parse(path, importtime=True)
    ms = statistics.median(r["seconds"] for r in runs) * 1000
    return ms, max(r["peak_rss_mib"] for r in runs), own_imports_ms(stderr)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=5, help="parses per file (median)")
    parser.add_argument("--bound-ms", type=float, default=400.0, help="fail above this many ms per file")
    args = parser.parse_args()

    paths = sorted(DAGS.glob("*.py"))
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-dag-") as tmp:
        minimal = Path(tmp) / "minimal.py"
        minimal.write_text(MINIMAL_DAG)
        floor_ms, _, _ = measure(minimal, args.repeat)
    print(f"floor  minimal DAG                 {floor_ms:7.1f} ms", flush=True)
    warm_by_file = warm(paths, args.repeat)
    figures: list[Figure] = []
    for path in paths:
        cold_ms, peak, imports = measure(path, args.repeat)
        warm_ms = warm_by_file[path.name]
        line = f"{cold_ms:7.1f} ms cold (imports {imports:.0f} ms), {warm_ms:7.1f} ms warm"
        print(f"parse  {path.name:28s} {line}", flush=True)
        figures.append(
            Figure(
                name=f"parse {path.name}",
                value=round(cold_ms, 1),
                unit="ms",
                floor=round(floor_ms, 1),
                goal=GOAL_MS,
                bound=args.bound_ms,
                peak_rss_mib=round(peak),
                note=f"fresh interpreter after airflow.sdk; imports {imports:.0f} ms; warm {warm_ms:.0f} ms;"
                " floor: a one-task DAG; goal/bound in ms",
            )
        )
    return emit("dag_parse", figures)


if __name__ == "__main__":
    sys.exit(main())
