"""Per-step fixed cost: each ``ml-tasks`` step on an empty interval, as a child process, against floors.

The steps run in pipeline order on one day with zero trips (``extract --source synthetic --trips-per-day 0``
writes an empty raw partition; every later step does its real work on it: transform, validate, publish,
build-features, features-pending, feature-apply, materialize), so what they cost is their fixed cost:
interpreter, imports, settings, registry, manifests. Each step must exit 0 (the bench fails otherwise).

Floors, measured in the same run: ``python -c pass`` (the interpreter) and ``python -c "import X"`` for the
one heavy library a step needs (great_expectations for validate, feast for the Feast steps); each floor
ends as ``ml-tasks`` does (``FAST_EXIT``: no module teardown), so the two compare like for like. Goals (issue
17): <= 2 s for a step without a heavy library; <= the heavy library's import time for the others
(ratio <= 1). Each figure is the median wall time of ``--repeat`` runs; peak RSS is the largest child's.
The note names the step's largest imports (``python -X importtime``, one extra run): the profile.

Then the same steps through the local platform's step server (``scripts/airflow_local/stepserver.py``, its
default preload; docs/step-server.md), the way ``make demo``'s tasks run them: the server has imported the
heavy libraries once and forks a child per step. Reported as ``<step> (step server)``, against the same
floors; peak RSS is not reported there (the child shares the server's pages).

Usage: python bench/step_startup.py [--repeat 3] [--day 2024-05-01] [--light-bound 6] [--heavy-bound 3]
    [--no-server]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `python bench/x.py`: import bench._results

from bench._results import FAST_EXIT, Figure, emit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "dags"))  # the local runner's client: `_lib.stepclient`
#: (step argv after ``ml-tasks`` with {day}, the one heavy library it needs or None), in pipeline order
STEPS: tuple[tuple[str, str | None], ...] = (
    ("extract --start {day} --source synthetic --trips-per-day 0", None),
    ("transform --start {day}", None),
    ("validate --start {day} --allow-empty", "great_expectations"),
    ("publish --start {day}", None),
    ("build-features --start {day}", None),
    ("features-pending", None),
    ("feature-apply", "feast"),
    ("materialize --start {day}", "feast"),
)
LIGHT_GOAL_SECONDS = 2.0


@dataclass(frozen=True)
class Run:
    seconds: float
    peak_rss_mib: float
    stderr: str


def run(argv: list[str], env: dict[str, str]) -> Run:
    """Run ``argv`` to completion: wall seconds, the child's peak RSS (``wait4``); exit != 0 is fatal."""
    with tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        stderr = err.read().decode(errors="replace")
    if proc.returncode != 0:
        tail = stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        raise SystemExit(f"bench/step_startup: {' '.join(argv[1:])} exited {proc.returncode}: {tail[0]}")
    return Run(seconds, usage.ru_maxrss / 1024, stderr)


def measure(argv: list[str], env: dict[str, str], repeat: int) -> tuple[float, float]:
    """(median seconds, max peak RSS MiB) of ``repeat`` runs."""
    runs = [run(argv, env) for _ in range(repeat)]
    return statistics.median(r.seconds for r in runs), max(r.peak_rss_mib for r in runs)


@contextmanager
def step_server(tmp: Path, env: dict[str, str]) -> Iterator[str]:
    """A step server with its default preload on a socket in ``tmp``; stopped (SIGTERM) afterwards."""
    from scripts.airflow_local.stepserver import stepserver_argv

    sock = tmp / "steps.sock"
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(stepserver_argv(sock), cwd=REPO, env=env, stderr=err)
        try:
            deadline = time.monotonic() + 180
            while not sock.exists():
                if proc.poll() is not None or time.monotonic() > deadline:
                    err.seek(0)
                    tail = err.read().decode(errors="replace")[-500:]
                    raise SystemExit(f"bench/step_startup: the step server did not start: {tail}")
                time.sleep(0.1)
            yield str(sock)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def served(argv: list[str], sock: str) -> float:
    """Wall seconds of ``ml-tasks argv`` run by the step server at ``sock``; exit != 0 is fatal."""
    from _lib import stepclient

    started = time.perf_counter()
    step, why = stepclient.start(argv, sock)
    if step is None:
        raise SystemExit(f"bench/step_startup: {' '.join(argv)}: {why}")
    with step:
        stderr = step.stderr.read()
        step.stdout.read()
    seconds = time.perf_counter() - started
    if step.returncode != 0:
        tail = stderr.strip().splitlines()[-1:] or ["(no stderr)"]
        raise SystemExit(f"bench/step_startup: served {' '.join(argv)} exited {step.returncode}: {tail[0]}")
    return seconds


def top_imports(stderr: str, count: int = 3) -> tuple[float, str]:
    """Total import seconds and the ``count`` largest top-level imports of a ``-X importtime`` run."""
    top: list[tuple[float, str]] = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        if not name.startswith(" ") or name.startswith("  "):  # one leading space: a top-level import
            continue
        top.append((int(cumulative) / 1e6, name.strip()))
    total = sum(s for s, _ in top)
    names = ", ".join(f"{n} {s:.2f}" for s, n in sorted(top, reverse=True)[:count])
    return total, names


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per step and floor (median)")
    parser.add_argument("--day", default="2024-05-01", help="the empty day")
    parser.add_argument("--light-bound", type=float, default=6.0, help="fail above this many s (light step)")
    parser.add_argument("--heavy-bound", type=float, default=3.0, help="fail above this step/import ratio")
    parser.add_argument("--no-server", action="store_true", help="skip the step-server measurements")
    args = parser.parse_args()
    os.chdir(REPO)

    py = sys.executable
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="flywheel-bench-startup-") as tmp:
        env = {
            **os.environ,
            "FLYWHEEL_DATA_ROOT": str(Path(tmp) / "data"),
            "FLYWHEEL_FEAST_DIR": str(Path(tmp) / "feast"),
            "FLYWHEEL_FEAST_ENV": "local",
        }
        floors: dict[str | None, float] = {}
        for heavy in (None, *sorted({h for _, h in STEPS if h})):
            code = "pass" if heavy is None else f"import {heavy}"
            seconds, peak = measure([py, "-c", code + FAST_EXIT], env, args.repeat)
            floors[heavy] = seconds
            print(f"floor  python -c {code!r:28s} {seconds:6.2f} s  peak RSS {peak:6.0f} MiB", flush=True)
        for template, heavy in STEPS:
            step = template.format(day=args.day).split()
            argv = [py, "-m", "ml_tasks.cli", *step]
            seconds, peak = measure(argv, env, args.repeat)
            imports, largest = top_imports(run([py, "-X", "importtime", *argv[1:]], env).stderr)
            floor = floors[heavy]
            name = step[0]
            note = f"imports {imports:.2f} s: {largest}"
            if heavy is None:
                fig = Figure(
                    name,
                    round(seconds, 2),
                    "s",
                    floor=round(floor, 3),
                    goal=LIGHT_GOAL_SECONDS,
                    bound=args.light_bound,
                    peak_rss_mib=round(peak),
                    note=f"floor: python -c pass; goal and bound in s; {note}",
                )
            else:
                fig = Figure(
                    name,
                    round(seconds, 2),
                    "s",
                    floor=round(floor, 2),
                    ratio=round(seconds / floor, 2),
                    goal=1.0,
                    bound=args.heavy_bound,
                    peak_rss_mib=round(peak),
                    note=f"floor: import {heavy}; {note}",
                )
            line = f"step   {' '.join(step):38s} {seconds:6.2f} s  peak RSS {peak:6.0f} MiB  {note}"
            print(line, flush=True)
            figures.append(fig)
        if not args.no_server:
            figures += served_figures(Path(tmp), env, floors, args)
    return emit("startup", figures)


def served_figures(
    tmp: Path, env: dict[str, str], floors: dict[str | None, float], args: argparse.Namespace
) -> list[Figure]:
    """Each step again, through a step server (the local platform's runner), against the same floors."""
    figures: list[Figure] = []
    os.environ.update(env)  # the client sends this process's environment and working directory
    with step_server(tmp, env) as sock:
        for template, heavy in STEPS:
            step = template.format(day=args.day).split()
            seconds = statistics.median(served(step, sock) for _ in range(args.repeat))
            floor = floors[heavy]
            light = heavy is None
            figures.append(
                Figure(
                    f"{step[0]} (step server)",
                    round(seconds, 2),
                    "s",
                    floor=round(floor, 3 if light else 2),
                    ratio=None if light else round(seconds / floor, 2),
                    goal=LIGHT_GOAL_SECONDS if light else 1.0,
                    bound=args.light_bound if light else args.heavy_bound,
                    note="forked by a step server that preloaded the heavy libraries (docs/step-server.md);"
                    f" floor: {'python -c pass' if light else f'import {heavy}'} in a fresh process",
                )
            )
            print(f"served {' '.join(step):38s} {seconds:6.2f} s", flush=True)
    return figures


if __name__ == "__main__":
    sys.exit(main())
