"""One record per benchmark figure, the shared contract of every ``bench/*.py`` script and ``make bench``.

A script builds :class:`Figure` values and hands them to :func:`emit`, which prints them, writes the
script's part file ``bench/results/parts/<bench>.json`` (``make bench`` merges the parts into
``bench/results/latest.json``) and returns the exit code: 1 when a figure is above its regression bound.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = RESULTS / "parts"


@dataclass(frozen=True)
class Figure:
    """One measured figure.

    ``value`` is in ``unit``; ``floor`` is the same quantity for the floor measured in the same run and
    ``ratio`` = value / floor (or floor / value for throughputs: always "times worse than the floor").
    ``goal`` is the issue's target for ``ratio`` (or for ``value`` when there is no floor), ``bound`` the
    regression bound the bench fails above (compared with ``ratio`` when set, else with ``value``).
    """

    name: str
    value: float
    unit: str
    floor: float | None = None
    ratio: float | None = None
    goal: float | None = None
    bound: float | None = None
    rows: int | None = None
    peak_rss_mib: float | None = None
    note: str = ""

    @property
    def checked(self) -> float:
        return self.ratio if self.ratio is not None else self.value

    @property
    def over_bound(self) -> bool:
        return self.bound is not None and self.checked > self.bound


def machine() -> dict[str, Any]:
    """Cores, CPU model, Python and the date: what a figure was measured on."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def children_peak_rss_mib() -> float:
    """Peak RSS of the largest waited-for child process so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def emit(bench: str, figures: list[Figure], parts_dir: Path | None = None) -> int:
    """Print ``figures`` as one JSON line, write the bench's part file, return the exit code."""
    record = {"bench": bench, "machine": machine(), "figures": [asdict(f) for f in figures]}
    target = (parts_dir or Path(os.environ.get("FLYWHEEL_BENCH_PARTS", PARTS))) / f"{bench}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record))
    failed = [f for f in figures if f.over_bound]
    for f in failed:
        print(f"FAIL: {bench} {f.name} = {f.checked:g} above its bound {f.bound:g}", file=sys.stderr)
    return 1 if failed else 0


#: prepended to a measured child's ``python -c`` code: at exit it writes its own peak RSS (``VmHWM``, per
#: address space) to stderr. ``ru_maxrss`` from ``os.wait4`` would not do: Linux carries the forking
#: parent's high-water mark across ``execve``, so a child of a 2 GB bench reports at least 2 GB.
PEAK_AT_EXIT = """
import atexit as _atexit, sys as _sys
def _peak():
    with open("/proc/self/status") as _status:
        for _line in _status:
            if _line.startswith("VmHWM:"):
                _sys.stderr.write("FLYWHEEL_PEAK_KIB " + _line.split()[1] + "\\n")
_atexit.register(_peak)
"""


#: appended to a floor's ``python -c`` code: it ends as ``ml-tasks`` does (``ml_tasks.cli.finish``: exit
#: handlers, flush, ``os._exit``), so a step and its floor both skip the interpreter's module teardown
FAST_EXIT = """
import atexit as _atexit, os as _os, sys as _sys
_atexit._run_exitfuncs()
_sys.stdout.flush()
_sys.stderr.flush()
_os._exit(0)
"""


def child_peak_mib(stderr: str) -> float | None:
    """The peak RSS (MiB) a child started with :data:`PEAK_AT_EXIT` reported, if it did."""
    for line in reversed(stderr.splitlines()):
        if line.startswith("FLYWHEEL_PEAK_KIB "):
            return int(line.split()[1]) / 1024
    return None
