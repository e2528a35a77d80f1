"""The scoring pipeline's two helpers: a bounded prefetching thread and an in-order background writer."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import pytest

from ml_tasks.prediction.pipeline import OneBehind, prefetch


def _threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(name)]


def test_prefetch_keeps_order_and_runs_at_most_depth_ahead() -> None:
    produced: list[int] = []

    def items() -> Iterator[int]:
        for i in range(20):
            produced.append(i)
            yield i

    seen = []
    with contextlib.closing(prefetch(items(), 2, "t-order")) as ahead:
        for item in ahead:
            time.sleep(0.01)  # the producer fills the queue meanwhile
            # taken: item; waiting: at most 2; one more may be computed and blocked on the full queue
            assert len(produced) - 1 - item <= 3, (item, len(produced))
            seen.append(item)
    assert seen == list(range(20))
    assert not _threads("t-order")


def test_prefetch_raises_the_producers_error_at_its_item() -> None:
    def items() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("join failed on day 3")

    seen = []
    with pytest.raises(ValueError, match="join failed on day 3"):
        for item in prefetch(items(), 1, "t-error"):
            seen.append(item)
    assert seen == [1, 2]
    assert not _threads("t-error")


def test_closing_prefetch_stops_its_thread() -> None:
    produced: list[int] = []

    def endless() -> Iterator[int]:
        i = 0
        while True:
            produced.append(i)
            yield i
            i += 1

    with contextlib.closing(prefetch(endless(), 2, "t-close")) as ahead:
        assert next(ahead) == 0
        time.sleep(0.05)
    assert not _threads("t-close")
    stopped = len(produced)
    time.sleep(0.25)
    assert len(produced) == stopped <= 4
    with pytest.raises(ValueError, match="depth must be >= 1"):
        next(prefetch(iter([1]), 0))


def test_one_behind_runs_in_order_one_at_a_time() -> None:
    done: list[int] = []
    running = []

    def job(i: int) -> None:
        running.append(i)
        assert len(running) == 1  # never two at once
        time.sleep(0.005)
        done.append(i)
        running.remove(i)

    with OneBehind("t-writer") as writer:
        for i in range(10):
            writer.submit(job, i)
            assert len(done) >= i  # job i-1 finished before job i was submitted
    assert done == list(range(10))
    assert not _threads("t-writer")


def test_one_behind_raises_a_jobs_error_at_the_next_submit_or_on_leaving() -> None:
    def fail(i: int) -> None:
        raise OSError(f"disk full at {i}")

    ran: list[int] = []
    with pytest.raises(OSError, match="disk full at 0"), OneBehind("t-fail") as writer:
        writer.submit(fail, 0)
        writer.submit(ran.append, 1)  # raises job 0's error: job 1 never runs
    assert ran == []
    with pytest.raises(OSError, match="disk full at 5"), OneBehind("t-fail") as writer:
        writer.submit(fail, 5)
    # an error in the caller: the running job finishes, its own error is dropped, the caller's kept
    with pytest.raises(KeyError, match="scoring"), OneBehind("t-fail") as writer:
        writer.submit(fail, 7)
        raise KeyError("scoring")
    assert not _threads("t-fail")
