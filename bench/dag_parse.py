"""DAG parse time: each file of dags/ parsed as the dag-processor parses it, after airflow.sdk is imported.

Each file is parsed in a fresh interpreter that has already imported ``airflow.sdk`` and the DagBag (as the
dag-processor has: it forks a process per file), so the time is what the file itself costs: its imports
(dags/_lib, the operators it uses) and building the DAG. ``--repeat`` runs per file, the median is the
figure; the floor is the same parse of a minimal DAG file (one task, no _lib) in the same run. Goal
(issue 17): <= 50 ms per file. The note lists how long the file's own imports took (``-X importtime``).

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
PROBE = """
import json, resource, sys, time
from pathlib import Path
import airflow.sdk
from airflow.dag_processing.dagbag import BundleDagBag
print("--- parse ---", file=sys.stderr, flush=True)
path = Path(sys.argv[1])
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

    with tempfile.TemporaryDirectory(prefix="flywheel-bench-dag-") as tmp:
        minimal = Path(tmp) / "minimal.py"
        minimal.write_text(MINIMAL_DAG)
        floor_ms, _, _ = measure(minimal, args.repeat)
    print(f"floor  minimal DAG                 {floor_ms:7.1f} ms", flush=True)
    figures: list[Figure] = []
    for path in sorted(DAGS.glob("*.py")):
        ms, peak, imports = measure(path, args.repeat)
        print(f"parse  {path.name:28s} {ms:7.1f} ms (imports {imports:.0f} ms)", flush=True)
        figures.append(
            Figure(
                name=f"parse {path.name}",
                value=round(ms, 1),
                unit="ms",
                floor=round(floor_ms, 1),
                goal=GOAL_MS,
                bound=args.bound_ms,
                peak_rss_mib=round(peak),
                note=f"after airflow.sdk; floor: a one-task DAG; goal/bound in ms; imports {imports:.0f} ms",
            )
        )
    return emit("dag_parse", figures)


if __name__ == "__main__":
    sys.exit(main())
