"""A real ``mlflow server`` for tests: SQLite backend and proxied artifacts in a folder, on 127.0.0.1.

The server can be stopped and started again on the same port and the same store (what a tracking
server outage looks like to a step):

    server = MlflowServer(tmp_path / "mlflow").start()
    os.environ["MLFLOW_TRACKING_URI"] = server.url
    server.stop(); server.start()  # same URL, same runs
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from scripts.airflow_local.servers import MLFLOW_SERVER_ENV

START_SECONDS = 90.0
STOP_SECONDS = 20.0


class MlflowServerError(RuntimeError):
    """mlflow server did not start (the message carries the tail of its log)."""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MlflowServer:
    """One ``mlflow server`` process with its store (``server.db``) and artifacts under ``folder``."""

    folder: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "server.log"

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-800:]
        except OSError:
            return "(no log)"

    def start(self) -> MlflowServer:
        """Start the server (on its earlier port when restarted) and wait until /health answers.

        Raises:
            MlflowServerError: it exited or did not answer within ``START_SECONDS``.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = self.port or _free_port()
        with self.log_path.open("a") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "mlflow", "server",
                    "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
                    "--backend-store-uri", f"sqlite:///{self.folder}/server.db",
                    "--artifacts-destination", str(self.folder / "artifacts"),
                ],
                stdout=log, stderr=subprocess.STDOUT,
                env={**os.environ, **MLFLOW_SERVER_ENV, "MLFLOW_TRACKING_URI": ""},
                start_new_session=True,  # its own process group: stop() ends uvicorn's workers too
            )  # fmt: skip
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise MlflowServerError(
                    f"mlflow server exited with {self.proc.returncode}: {self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise MlflowServerError(
            f"mlflow server did not answer within {START_SECONDS:.0f} s: {self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the server and its workers (SIGTERM to its process group, then SIGKILL)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):  # a worker that outlived its parent
            os.killpg(proc.pid, signal.SIGKILL)
