"""The local step server: the steps' heavy libraries imported once, one forked child per ``ml-tasks`` run.

A local DAG task's ``ml-tasks <argv>`` pays Python's start-up and the imports of Feast, great-expectations,
Evidently, MLflow and torch (seconds each) before any data moves. This server pays them once: a request
(argv, environment, working directory, and the caller's stdout/stderr pipes passed as file descriptors)
forks a child that imports ``ml_tasks`` afresh (never stale code) and runs the CLI's ``main(argv)``.
The contract is the CLI's: same argv, output and exit status. Protocol and rationale: docs/step-server.md.

Usage: python scripts/airflow_local/stepserver.py SOCKET_PATH
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

#: third-party modules the steps import (ml_tasks itself is imported in each child, so edits show at once);
#: FLYWHEEL_STEP_SERVER_PRELOAD (comma-separated) replaces the list
PRELOAD = (
    "pyarrow.parquet",
    "pandas",
    "duckdb",
    "pydantic",
    "typer",
    "mlflow",
    "onnxruntime",
    "great_expectations",
    "feast",
    "evidently",
    "torch",
)
#: longest request (argv + environment as JSON) the server reads
MAX_REQUEST = 1 << 20
#: seconds a step gets to end after SIGTERM when its caller went away, before SIGKILL
KILL_GRACE = 10.0

log = logging.getLogger("flywheel.stepserver")


def venv_stamp() -> int:
    """Changes when packages are installed or removed (site-packages' mtime): preloaded modules are stale."""
    return Path(sysconfig.get_paths()["purelib"]).stat().st_mtime_ns


def read_request(conn: socket.socket) -> tuple[dict[str, Any], list[int]]:
    """One JSON line and the file descriptors sent with it (the caller's stdout and stderr)."""
    data, fds = b"", []
    while not data.endswith(b"\n"):
        chunk, new_fds, _, _ = socket.recv_fds(conn, 65536, 4)
        fds += new_fds
        if not chunk:
            break
        data += chunk
        if len(data) > MAX_REQUEST:
            raise ValueError(f"request longer than {MAX_REQUEST} bytes")
    request = json.loads(data)
    if not isinstance(request, dict) or not isinstance(request.get("argv"), list) or len(fds) != 2:
        raise ValueError("expected {argv, env, cwd} with two file descriptors (stdout, stderr)")
    return request, fds


def run_child(request: dict[str, Any], fds: list[int], server_fds: list[int]) -> None:
    """In the forked child: close the server's sockets, become ``ml-tasks <argv>``, never return."""
    code = 1
    try:
        signal.set_wakeup_fd(-1)  # the server's SIGCHLD wake-up pipe is not the step's
        for fd in server_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        with contextlib.suppress(ImportError):  # before the environment changes (it reuses that memory)
            from setproctitle import setproctitle

            setproctitle(f"ml-tasks {' '.join(map(str, request['argv']))}")
        os.setpgid(0, 0)  # its own group: torchrun's and other grandchildren go with it
        devnull = os.open(os.devnull, os.O_RDONLY)
        for fd, target in ((devnull, 0), (fds[0], 1), (fds[1], 2)):
            os.dup2(fd, target)
        os.environ.clear()
        os.environ.update({str(k): str(v) for k, v in dict(request.get("env") or {}).items()})
        os.chdir(request.get("cwd") or "/")
        argv = [str(a) for a in request["argv"]]
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the child's own stdio for its whole life
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.argv = ["ml-tasks", *argv]
        logging.root.handlers.clear()
        for name in [m for m in sys.modules if m == "ml_tasks" or m.startswith("ml_tasks.")]:
            del sys.modules[name]
        from ml_tasks.cli import main

        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # anything: reported on the caller's stderr, exit 1
        import traceback

        with contextlib.suppress(Exception):
            traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def terminate_group(pid: int) -> None:
    """SIGTERM a step's process group, and SIGCONT so that a stopped step (a test pause) receives it."""
    for sig in (signal.SIGTERM, signal.SIGCONT):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)


class StepServer:
    """Accept requests on a unix socket, fork a child per request, report its pid and exit status."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.stamp = venv_stamp()
        self.selector = selectors.DefaultSelector()
        #: child pid -> (its caller's connection, when SIGTERM was sent after the caller went away)
        self.children: dict[int, tuple[socket.socket, float | None]] = {}
        self.stopping = False
        self.wake, self.wake_writer = socket.socketpair()
        for end in (self.wake, self.wake_writer):
            end.setblocking(False)

    def serve(self) -> None:
        self.path.unlink(missing_ok=True)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)  # the socket file: this user only
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        listener.listen(16)
        self.selector.register(listener, selectors.EVENT_READ, "accept")
        # a step's exit wakes the loop at once (SIGCHLD -> the wake-up socket), not at the next 0.1 s tick
        signal.set_wakeup_fd(self.wake_writer.fileno())
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.selector.register(self.wake, selectors.EVENT_READ, "wake")
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "stopping", True))
        log.info("ready on %s (pid %d)", self.path, os.getpid())
        try:
            while not self.stopping or self.children:
                if self.stopping:
                    self.terminate_all()
                for key, _ in self.selector.select(timeout=0.1):
                    if key.data == "wake":
                        with contextlib.suppress(BlockingIOError):
                            self.wake.recv(4096)
                    elif key.data == "accept" and not self.stopping:
                        self.accept(listener)
                    elif isinstance(key.data, int):
                        self.caller_gone(key.data)
                self.reap()
        finally:
            self.path.unlink(missing_ok=True)
            listener.close()
            signal.set_wakeup_fd(-1)
            self.wake.close()
            self.wake_writer.close()
        log.info("stopped")

    def accept(self, listener: socket.socket) -> None:
        conn, _ = listener.accept()
        conn.settimeout(5)
        try:
            request, fds = read_request(conn)
        except (OSError, ValueError) as exc:
            log.warning("bad request: %s", exc)
            self.reply(conn, {"refused": f"bad request: {exc}"})
            conn.close()
            return
        if venv_stamp() != self.stamp:
            self.reply(conn, {"refused": "installed packages changed since the server started: restarting"})
            conn.close()
            for fd in fds:
                os.close(fd)
            self.restart()
            return
        server_fds = [listener.fileno(), self.selector.fileno(), conn.fileno()]
        server_fds += [self.wake.fileno(), self.wake_writer.fileno()]
        server_fds += [c.fileno() for c, _ in self.children.values()]
        pid = os.fork()
        if pid == 0:
            run_child(request, fds, server_fds)
        for fd in fds:
            os.close(fd)
        log.info("pid %d: ml-tasks %s", pid, " ".join(map(str, request["argv"]))[:300])
        self.children[pid] = (conn, None)
        self.reply(conn, {"pid": pid})
        self.selector.register(conn, selectors.EVENT_READ, pid)

    def caller_gone(self, pid: int) -> None:
        """The caller's connection became readable: it closed (killed task). Stop its step too."""
        conn, termed = self.children[pid]
        with contextlib.suppress(OSError):
            if conn.recv(1):
                return
        self.selector.unregister(conn)
        if termed is None:
            log.warning("pid %d: the caller went away, terminating the step", pid)
            terminate_group(pid)
            self.children[pid] = (conn, time.monotonic())

    def terminate_all(self) -> None:
        """The server is stopping: SIGTERM every running step once (SIGKILL after the grace period)."""
        for pid, (conn, termed) in list(self.children.items()):
            if termed is None:
                terminate_group(pid)
                self.children[pid] = (conn, time.monotonic())

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                break
            conn, _ = self.children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            log.info("pid %d: exit status %d", pid, code)
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(conn)
            self.reply(conn, {"exit": code})
            conn.close()
        now = time.monotonic()
        for pid, (_, termed) in self.children.items():
            if termed is not None and now - termed > KILL_GRACE:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)

    @staticmethod
    def reply(conn: socket.socket, message: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            conn.sendall(json.dumps(message).encode() + b"\n")

    def restart(self) -> None:
        """Re-exec with fresh imports once the running steps ended (callers fall back meanwhile)."""
        log.info("installed packages changed: restarting after %d running step(s)", len(self.children))
        self.path.unlink(missing_ok=True)
        while self.children:
            self.reap()
            time.sleep(0.1)
        os.execv(sys.executable, stepserver_argv(self.path))


def stepserver_argv(path: Path) -> list[str]:
    """The command that runs a step server on ``path`` (this file as a script: no package on sys.path)."""
    return [sys.executable, str(Path(__file__).resolve()), str(path)]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit(f"usage: python {Path(__file__).name} SOCKET_PATH")
    # only the server's own lines: libraries log at import (great-expectations: hundreds of INFO lines)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    started = time.monotonic()
    preload = [m for m in os.environ.get("FLYWHEEL_STEP_SERVER_PRELOAD", ",".join(PRELOAD)).split(",") if m]
    for name in preload:
        try:
            importlib.import_module(name)
        except ImportError as exc:  # a lighter install: the steps that need it import it themselves
            log.warning("not preloaded: %s (%s)", name, exc)
    log.info("preloaded %d modules in %.1f s", len(preload), time.monotonic() - started)
    StepServer(Path(args[0])).serve()


if __name__ == "__main__":
    main()
