"""The console script ends its process with ``os._exit`` after what the interpreter's exit would do first
(non-daemon threads joined, exit handlers run, streams flushed): nothing of that may be lost."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

PROBE = """
import atexit, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from ml_tasks.cli import entry

pool = ThreadPoolExecutor(max_workers=1)  # never shut down: its idle worker must not hold the exit
pool.submit(print, "pool job ran", flush=True).result()

def late() -> None:
    time.sleep(0.5)
    print("thread finished", flush=True)

atexit.register(lambda: print("exit handler ran"))  # not flushed by itself: entry() must flush
threading.Thread(target=late).start()
sys.argv = ["ml-tasks", *sys.argv[1:]]
entry()
print("not reached")
"""


@pytest.mark.parametrize(
    ("argv", "code", "out"),
    [(["--help"], 0, "Usage: ml-tasks"), (["extract", "--bogus"], 2, ""), (["no-such-step"], 2, "")],
)
def test_entry_exits_with_the_code_after_threads_handlers_and_output(
    argv: list[str], code: int, out: str
) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=30,
        check=False,
    )
    assert proc.returncode == code, proc.stderr[-2000:]
    assert out in proc.stdout
    lines = proc.stdout.splitlines()
    assert lines[-2:] == ["thread finished", "exit handler ran"]
    assert "not reached" not in proc.stdout
    if code == 2:
        assert "Usage: ml-tasks" in proc.stderr


def test_a_failing_step_still_exits_1_with_its_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "ml-tasks"), "transform", "--start", "2024-05-02",
         "--end", "2024-05-01"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
        env={"PATH": "/usr/bin:/bin", "FLYWHEEL_DATA_ROOT": str(tmp_path / "data")},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stdout == ""
    assert [line for line in proc.stderr.splitlines() if line.startswith("ml-tasks: error: ")]
