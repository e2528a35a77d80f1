"""Partition writers: their staging names, the lock a live writer holds, the sweep of dead writers'
leftovers, and the pause points of the kill tests (``docs/reliability.md``).

A writer stages a partition ``<name>`` in ``.staging-<name>-<token>``, moves the partition it replaces
aside to ``<name>.old-<token>`` and, on a local root, holds an exclusive ``flock`` on
``.staging-<name>-<token>.lock`` while it lives: the kernel releases it when the process dies (kill -9
included), so a sweeper that can take it knows the writer is gone.
"""

from __future__ import annotations

import fcntl
import os
import signal
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.fs as pafs

STAGING_PREFIX = ".staging-"
LOCK_SUFFIX = ".lock"
OLD_INFIX = ".old-"
#: object stores (no locks) and lock-less leftovers: a writer whose files are this old is dead
STALE_WRITER_SECONDS = 6 * 3600
#: test hook: ``FLYWHEEL_PAUSE_AT=<point>[:<n>]`` stops the process at the n-th pass of a point
PAUSE_ENV = "FLYWHEEL_PAUSE_AT"
_PAUSE_HITS: dict[str, int] = {}


def _local(fs: pafs.FileSystem) -> bool:
    return isinstance(fs, pafs.LocalFileSystem)


def lock_path(parent: str, name: str, token: str) -> str:
    return f"{parent}/{STAGING_PREFIX}{name}-{token}{LOCK_SUFFIX}"


@contextmanager
def writer_lock(fs: pafs.FileSystem, parent: str, name: str, token: str) -> Iterator[None]:
    """Hold the writer's lock (local roots) for the block; object stores have none (swept by age)."""
    if not _local(fs):
        yield
        return
    lock = Path(lock_path(parent, name, token))
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            lock.unlink(missing_ok=True)


def token_of(base_name: str, name: str) -> str | None:
    """The writer token of a leftover entry of partition ``name`` (None: not one of its leftovers)."""
    staging = f"{STAGING_PREFIX}{name}-"
    if base_name.startswith(staging):
        token = base_name[len(staging) :].removesuffix(LOCK_SUFFIX)
    elif base_name.startswith(f"{name}{OLD_INFIX}"):
        token = base_name[len(name) + len(OLD_INFIX) :]
    else:
        return None
    return token if token and "-" not in token and "." not in token else None


def leftovers(fs: pafs.FileSystem, parent: str, name: str) -> list[str]:
    """Staging, moved-aside and lock entries of partition ``name`` in ``parent`` (live writers' too)."""
    infos = fs.get_file_info(pafs.FileSelector(parent, recursive=False))
    return sorted(i.path for i in infos if token_of(i.base_name, name) is not None)


def sweep(fs: pafs.FileSystem, parent: str, name: str) -> list[str]:
    """Delete the leftovers of dead writers of partition ``name``; returns what was deleted.

    A writer is dead when its lock can be taken (local roots) or, on object stores and for lock-less
    leftovers, when its files are older than :data:`STALE_WRITER_SECONDS`. A live writer's staging is
    never touched.
    """
    by_token: dict[str, list[str]] = {}
    for entry in leftovers(fs, parent, name):
        token = token_of(entry.rsplit("/", 1)[1], name)
        assert token is not None
        by_token.setdefault(token, []).append(entry)
    swept: list[str] = []
    for token, entries in sorted(by_token.items()):
        lock = lock_path(parent, name, token)
        with _dead_writer(fs, lock, entries) as dead:
            if not dead:
                continue
            for entry in sorted(entries, key=lambda e: e == lock):  # the lock file last
                info = fs.get_file_info(entry)
                if info.type == pafs.FileType.Directory:
                    fs.delete_dir(entry)
                elif info.type == pafs.FileType.File:
                    fs.delete_file(entry)
                swept.append(entry)
    return swept


@contextmanager
def _dead_writer(fs: pafs.FileSystem, lock: str, entries: list[str]) -> Iterator[bool]:
    """True (holding its lock until the block ends) when the writer of ``entries`` is gone."""
    if not _local(fs) or not Path(lock).exists():  # no lock to ask (object store, older writer): by age
        yield _older_than(fs, entries, STALE_WRITER_SECONDS)
        return
    with Path(lock).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False  # a live writer holds it
            return
        yield True


def _older_than(fs: pafs.FileSystem, entries: list[str], seconds: float) -> bool:
    """Every file under ``entries`` last modified more than ``seconds`` ago (unknown times: not old)."""
    now = time.time()
    for entry in entries:
        info = fs.get_file_info(entry)
        infos = [info]
        if info.type == pafs.FileType.Directory:
            infos += fs.get_file_info(pafs.FileSelector(entry, recursive=True))
        for item in infos:
            if item.mtime is None or now - item.mtime.timestamp() < seconds:
                return False
    return True


def pause_point(point: str) -> None:
    """Test hook: when ``FLYWHEEL_PAUSE_AT`` names ``point`` (``point`` or ``point:n`` for its n-th pass),
    say so on stderr and stop the process (SIGSTOP), so a test can kill -9 the step exactly there, or
    break something (stop a server) and let it go on (SIGCONT)."""
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != point:
        return
    _PAUSE_HITS[point] = _PAUSE_HITS.get(point, 0) + 1
    if _PAUSE_HITS[point] != (int(nth) if nth else 1):
        return
    print(f"flywheel: paused at {wanted} (pid {os.getpid()})", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGSTOP)
