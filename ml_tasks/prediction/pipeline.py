"""A bounded pipeline for scoring: batch i+1 is prepared and batch i-1 written while batch i is scored.

onnxruntime scores on one thread; DuckDB, pyarrow's compute kernels and its Parquet writer release the GIL,
so preparing (join + encode) and writing run beside it on another core. Memory stays bounded: at most
``depth`` prepared batches wait, and one write runs while the next batch is scored. Design and figures:
``docs/prediction.md``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any, TypeVar

T = TypeVar("T")
_POLL_SECONDS = 0.1


def _put(waiting: queue.Queue[tuple[str, Any]], stop: threading.Event, item: tuple[str, Any]) -> bool:
    """Put ``item`` unless the consumer stopped; whether it was put."""
    while not stop.is_set():
        try:
            waiting.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False


def prefetch(items: Iterable[T], depth: int, name: str = "prefetch") -> Generator[T, None, None]:
    """``items``, computed ahead in one background thread with at most ``depth`` of them waiting.

    An exception raised while computing an item is raised here, at that item. Closing the iterator (or an
    exception in the consumer) stops the thread after the item it is computing; close it (e.g. with
    ``contextlib.closing``) so the thread is joined before what it reads is released.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    waiting: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                if not _put(waiting, stop, ("item", item)):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            _put(waiting, stop, ("error", exc))
            return
        _put(waiting, stop, ("end", None))

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = waiting.get()
            if kind == "item":
                yield value
            elif kind == "error":
                raise value
            else:
                return
    finally:
        stop.set()
        thread.join()


class OneBehind:
    """Runs jobs in order in one background thread, at most one at a time: :meth:`submit` first waits for
    the previous job (raising its error), so the caller works on job i+1 while job i runs.

    Leaving the block waits for the last job (raising its error); leaving it on an exception waits for the
    running job and drops its outcome (the first error is the one that matters).
    """

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._last: Future[None] | None = None

    def submit(self, job: Callable[..., None], *args: Any) -> None:
        self.wait()
        self._last = self._pool.submit(job, *args)

    def wait(self) -> None:
        last, self._last = self._last, None
        if last is not None:
            last.result()

    def __enter__(self) -> OneBehind:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if kind is None:
                self.wait()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
