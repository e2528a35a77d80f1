"""Shared pieces of the feature-store benchmarks: measured children with a memory watchdog.

Every measured path runs in its own child process so that its peak RSS is its own (``os.wait4``
reports the child's ``ru_maxrss``). A watchdog polls the resident memory of the child's process tree
and kills it above a limit, and kills it after a timeout: a path that would take the machine down (Feast's
default materialization can need many GB) is reported as "did not finish", not allowed to crash the host.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_tasks.jsonout import read_summary

REPO = Path(__file__).resolve().parents[1]
GIB = 1024**3
POLL_SECONDS = 0.2


@dataclass
class ChildRun:
    """What one measured child did: its status, time, peak memory and JSON summary."""

    name: str
    status: str  # "ok", "out of memory", "timeout" or "failed"
    wall_seconds: float
    peak_rss_mib: float
    result: dict[str, Any] = field(default_factory=dict)
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def describe(self) -> str:
        """One line for the report: what happened when it did not finish."""
        if self.ok:
            return "ok"
        return f"did not finish: {self.detail}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status if self.ok else self.describe(),
            "wall_seconds": round(self.wall_seconds, 2),
            "peak_rss_mib": round(self.peak_rss_mib),
        }


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                kids.extend(int(p) for p in (task / "children").read_text().split())
    return kids


def _rss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, bytes (0 once it is gone)."""
    total, todo, seen = 0, [pid], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += _rss_bytes(p)
        todo.extend(_children(p))
    return total


def run_child(
    name: str, argv: list[str], env: dict[str, str], mem_limit_gib: float, timeout_s: float
) -> ChildRun:
    """Run ``argv`` to completion under the watchdog; its summary is its last JSON stdout line."""
    limit = int(mem_limit_gib * GIB)
    started = time.perf_counter()
    status, detail, seen_peak = "ok", "", 0
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        # its own session: the watchdog can kill the child's whole process group, and only that
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env, start_new_session=True, cwd=REPO)
        while True:
            pid, wait_status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            rss = tree_rss_bytes(proc.pid)
            seen_peak = max(seen_peak, rss)
            elapsed = time.perf_counter() - started
            if rss > limit or elapsed > timeout_s:
                if rss > limit:
                    status, detail = (
                        "out of memory",
                        (
                            f"out of memory at {rss / GIB:.1f} GB (watchdog limit {mem_limit_gib:g} GB,"
                            f" after {elapsed:.0f} s)"
                        ),
                    )
                else:
                    status, detail = (
                        "timeout",
                        f"timeout after {elapsed:.0f} s (peak {seen_peak / GIB:.1f} GB)",
                    )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                _, wait_status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(POLL_SECONDS)
        proc.returncode = os.waitstatus_to_exitcode(wait_status)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode(errors="replace")
    peak_mib = max(usage.ru_maxrss / 1024, seen_peak / 2**20)
    run = ChildRun(name=name, status=status, wall_seconds=seconds, peak_rss_mib=peak_mib, detail=detail)
    if status == "ok" and proc.returncode != 0:
        tail = stderr.strip().splitlines()[-1] if stderr.strip() else ""
        oom = "MemoryError" in stderr or proc.returncode == -signal.SIGKILL
        run.status = "failed"
        run.detail = (
            f"{'killed (out of memory?)' if oom else 'failed'} with exit code {proc.returncode}"
            f" at peak {peak_mib / 1024:.1f} GB: {tail[:300]}"
        )
        print(f"--- {name} stderr (tail) ---\n{stderr[-3000:]}", file=sys.stderr)
    elif status == "ok":
        run.result = read_summary(stdout)
    return run


def child_argv(script: str, mode: str, config: dict[str, Any]) -> list[str]:
    """argv that runs ``script`` in child ``mode`` with ``config`` (JSON)."""
    return [sys.executable, script, "--child", mode, "--config", json.dumps(config)]


def emit(summary: dict[str, Any]) -> None:
    """A child's last stdout line: its JSON summary."""
    print(json.dumps(summary, default=str), flush=True)


def server_rss_mib(proc: subprocess.Popen[bytes] | None) -> float:
    """Resident memory of a server process we started (Redis holds the online data, not the client)."""
    return _rss_bytes(proc.pid) / 2**20 if proc is not None else 0.0


def redis_client(connection: str) -> Any:
    """A redis-py client for a ``host:port`` connection string."""
    import redis

    host, port = connection.split(",", 1)[0].rsplit(":", 1)
    return redis.Redis(host=host, port=int(port))


def fmt_rate(value: float | None) -> str:
    return f"{value:>12,.0f}" if value is not None else f"{'-':>12s}"


def add_child_arguments(parser: argparse.ArgumentParser, max_ratio: float, ratio_help: str) -> None:
    """The options every feature benchmark shares: child limits, the bound, JSON output, child mode."""
    parser.add_argument("--mem-limit-gb", type=float, default=12.0, help="kill a child above this RSS")
    parser.add_argument("--timeout", type=float, default=900.0, help="kill a child after this many seconds")
    parser.add_argument("--max-ratio", type=float, default=max_ratio, help=ratio_help)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)


def run_child_mode(args: argparse.Namespace, child: Callable[[str, dict[str, Any]], dict[str, Any]]) -> bool:
    """In a child process (``--child MODE``): run ``child`` and print its summary; False in the parent."""
    if not args.child:
        return False
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    with contextlib.redirect_stdout(sys.stderr):  # Feast prints progress: keep stdout for the summary
        summary = child(args.child, json.loads(args.config))
    emit(summary)
    return True
