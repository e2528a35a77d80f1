"""The local runner's client of the step server (scripts/airflow_local/stepserver.py, docs/step-server.md).

:func:`start` asks the server at ``$FLYWHEEL_STEP_SERVER`` (a unix socket) to run ``ml-tasks <argv>`` with
this process's environment and working directory, its output into pipes read here. It returns a
:class:`ServedStep`, which reads like a ``subprocess.Popen`` (stdout, stderr, pid, wait, poll, terminate,
kill), or None when no server answers: the caller then starts the subprocess itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

#: environment variable naming the server's socket; unset or empty: no server
SOCKET_ENV = "FLYWHEEL_STEP_SERVER"


class ServedStep:
    """A step running in a child of the step server."""

    def __init__(
        self, conn: socket.socket, replies: IO[bytes], pid: int, stdout: IO[str], stderr: IO[str]
    ) -> None:
        self._conn = conn
        self._replies = replies
        self.pid = pid
        self.stdout = stdout
        self.stderr = stderr
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        """Block until the server reports the step's exit status (negative: killed by that signal)."""
        if timeout is not None:
            deadline = time.monotonic() + timeout
            while self.poll() is None:
                if time.monotonic() > deadline:
                    raise subprocess.TimeoutExpired(f"ml-tasks (pid {self.pid})", timeout)
                time.sleep(0.1)
        if self.returncode is None:
            self._conn.settimeout(None)
            line = self._replies.readline()
            self._replies.close()
            self._conn.close()
            message = json.loads(line) if line else {}
            # the server itself died: the step (its child) is gone with unknown status
            self.returncode = int(message.get("exit", -int(signal.SIGKILL)))
        return self.returncode

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return self.wait()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Signal the step's process group (SIGCONT follows, so that a stopped step receives it)."""
        if self.returncode is None:
            for each in (sig, signal.SIGCONT):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, each)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def __enter__(self) -> ServedStep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stdout.close()
        self.stderr.close()
        self.wait()


def start(argv: Sequence[str], path: str | None = None) -> tuple[ServedStep | None, str]:
    """Run ``ml-tasks <argv>`` in the step server; (None, why) when there is none or it refused."""
    path = path if path is not None else os.environ.get(SOCKET_ENV, "")
    if not path:
        return None, f"{SOCKET_ENV} is not set"
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(10)
    try:
        conn.connect(path)
    except OSError as exc:
        conn.close()
        return None, f"no step server at {path} ({exc.strerror or exc})"
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    request: dict[str, Any] = {"argv": list(argv), "env": dict(os.environ), "cwd": str(Path.cwd())}
    replies = conn.makefile("rb")  # one reader: the exit line may arrive with the pid line
    try:
        data = json.dumps(request).encode() + b"\n"
        sent = socket.send_fds(conn, [data], [out_w, err_w])
        conn.sendall(data[sent:])
        reply = json.loads(replies.readline() or b"{}")
    except (OSError, ValueError) as exc:
        reply = {"refused": f"no answer ({exc})"}
    finally:
        os.close(out_w)
        os.close(err_w)
    if "pid" not in reply:
        replies.close()
        conn.close()
        os.close(out_r)
        os.close(err_r)
        return None, f"step server at {path} refused: {reply.get('refused', reply)}"
    stdout = os.fdopen(out_r, "r", encoding="utf-8", errors="replace")
    stderr = os.fdopen(err_r, "r", encoding="utf-8", errors="replace")
    return ServedStep(conn, replies, int(reply["pid"]), stdout, stderr), ""
