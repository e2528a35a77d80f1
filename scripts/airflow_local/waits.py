"""Waiting on a running Airflow: one :func:`poll_until` (tenacity) for every poll loop, and the waits built
on it (runs, asset consumers, settled DAGs, backfills with the recipe that holds on SQLite)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import tenacity
from airflow_client import client

from scripts.airflow_local.api import AirflowClient, ApiError
from scripts.airflow_local.config import PlatformError, log

T = TypeVar("T")
TERMINAL_RUN_STATES = {"success", "failed"}
#: a new backfill gets 409 until the scheduler marks the previous one complete (a ~30 s timer), and
#: SQLite answers 503 "database is locked" now and then: creation is retried this often, 2 s apart
BACKFILL_CREATE_ATTEMPTS = 45


def poll_until(
    check: Callable[[], T | None], *, timeout: float, interval: float, failure: Callable[[], str]
) -> T:
    """Call ``check`` every ``interval`` seconds until it returns something other than None, and return that.

    Raises:
        PlatformError: ``failure()`` as the message, when ``timeout`` seconds passed first. Whatever
            ``check`` raises propagates at once.
    """

    def give_up(state: tenacity.RetryCallState) -> None:
        raise PlatformError(failure())

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_delay(max(timeout, 0)),
        wait=tenacity.wait_fixed(interval),
        retry=tenacity.retry_if_result(lambda result: result is None),
        retry_error_callback=give_up,
    )
    result = retrying(check)
    assert result is not None  # give_up raised otherwise
    return result


def _instant(value: str | dt.datetime) -> dt.datetime:
    return (
        value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    )


def _local_midnight(day: dt.date | str, tz: str) -> dt.datetime:
    if isinstance(day, str):
        return _instant(day)
    return dt.datetime.combine(day, dt.time(), tzinfo=ZoneInfo(tz))


def _by_run_after(runs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(runs, key=lambda r: (r["run_after"], r["dag_run_id"]))


class AirflowApi(AirflowClient):
    """The REST client plus the waits the tests and the demo need (``sqlite``: the platform's metadata DB
    is SQLite, and backfills take the recipe that holds there)."""

    def __init__(self, base_url: str, username: str, password: str, *, sqlite: bool = False) -> None:
        super().__init__(base_url, username, password)
        self.sqlite = sqlite

    def wait_runs(
        self, dag_id: str, run_ids: Iterable[str], timeout: float = 600, poll: float = 1.0
    ) -> dict[str, dict[str, Any]]:
        """Wait until every run is finished (success or failed); returns the runs by id."""
        pending = set(run_ids)
        done: dict[str, dict[str, Any]] = {}

        def finished() -> dict[str, dict[str, Any]] | None:
            for run_id in sorted(pending):
                run = self.dag_run(dag_id, run_id)
                if run["state"] in TERMINAL_RUN_STATES:
                    done[run_id] = run
                    pending.discard(run_id)
            return None if pending else done

        return poll_until(
            finished,
            timeout=timeout,
            interval=poll,
            failure=lambda: f"{dag_id}: runs still not finished after {timeout:.0f} s: {sorted(pending)}",
        )

    def wait_consumer_runs(
        self,
        asset_name: str,
        consumer_dag_id: str,
        source_run_ids: Iterable[str],
        *,
        since: dt.datetime | None = None,
        timeout: float = 900,
        poll: float = 2.0,
    ) -> list[dict[str, Any]]:
        """Wait for the runs of ``consumer_dag_id`` that Airflow created from the events of ``asset_name``
        emitted by the producer runs ``source_run_ids``, until they finished.

        Several producer runs may lead to one consumer run, which may also carry events of other producer
        runs: consumer runs are found from the consumer's side (its asset-triggered runs created at or
        after ``since``, and the events each consumed). Airflow 3.3.2 answers 500 for the upstream events
        of a run while another consumer run of one of them is still queued: a run is looked at once it
        has started (docs/local-platform.md).

        Returns:
            the consumer runs (finished), in the order they were created.

        Raises:
            PlatformError: the consumer is paused (Airflow queues no run for it), or no consumer run took
                the events of some producer runs, or the runs did not finish, within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        wanted = set(source_run_ids)
        filters: dict[str, Any] = {"run_type": "asset_triggered", "order_by": "run_after"}
        if since is not None:
            filters["run_after_gte"] = since.astimezone(dt.UTC).isoformat()
        consumed: dict[str, set[str]] = {}  # consumer run -> producer runs of the events it consumed
        missing = set(wanted)

        def all_taken() -> bool | None:
            if self.dag(consumer_dag_id)["is_paused"]:
                raise PlatformError(
                    f"{consumer_dag_id} is paused: Airflow creates no run from {asset_name} events for a"
                    " paused DAG (unpause it before the producer runs)"
                )
            for run in self.dag_runs(consumer_dag_id, **filters):
                run_id = run["dag_run_id"]
                if run_id in consumed or run["state"] == "queued":
                    continue
                try:
                    events = self.upstream_asset_events(consumer_dag_id, run_id)
                except ApiError as exc:
                    if exc.status != 500:
                        raise
                    continue
                consumed[run_id] = {str(e["source_run_id"]) for e in events if e["name"] == asset_name}
            missing.clear()
            missing.update(wanted - set().union(*consumed.values()))
            return None if missing else True

        poll_until(
            all_taken,
            timeout=timeout,
            interval=poll,
            failure=lambda: (
                f"no {consumer_dag_id} run took the {asset_name} events of {sorted(missing)} within"
                f" {timeout:.0f} s (did those runs publish? is the scheduler alive?)"
            ),
        )
        consumers = [run_id for run_id, sources in consumed.items() if sources & wanted]
        left = deadline - time.monotonic()
        done = self.wait_runs(consumer_dag_id, consumers, timeout=max(left, 1))
        return _by_run_after(done.values())

    def wait_settled(
        self,
        dag_id: str,
        since: dt.datetime,
        *,
        timeout: float = 900,
        quiet_polls: int = 2,
        poll: float = 5.0,
    ) -> list[dict[str, Any]]:
        """Every run of ``dag_id`` created at or after ``since``, once there is at least one, all are
        finished, no asset event is queued for the DAG, and that held for ``quiet_polls`` polls in a row.

        For asset chains where :meth:`wait_consumer_runs` is not enough: a consumer run takes every event
        since its DAG's previous run, and while the DAG is at ``max_active_runs`` Airflow keeps new events
        queued (no run is active between the two: only the queue tells).
        """
        quiet = 0
        busy: list[str] = []
        queued: list[dict[str, Any]] = []

        def settled() -> list[dict[str, Any]] | None:
            nonlocal quiet, busy, queued
            runs = self.dag_runs(dag_id, run_after_gte=since.astimezone(dt.UTC).isoformat())
            busy = [r["dag_run_id"] for r in runs if r["state"] not in TERMINAL_RUN_STATES]
            queued = self.queued_events(dag_id)
            quiet = 0 if busy or queued or not runs else quiet + 1
            return _by_run_after(runs) if quiet >= quiet_polls else None

        return poll_until(
            settled,
            timeout=timeout,
            interval=poll,
            failure=lambda: (
                f"{dag_id}: runs since {since} not settled after {timeout:.0f} s: running {busy},"
                f" {len(queued)} asset event(s) queued"
            ),
        )

    def backfill(
        self,
        dag_id: str,
        from_date: dt.date | str,
        to_date: dt.date | str,
        *,
        tz: str = "America/Chicago",
        conf: Mapping[str, Any] | None = None,
        max_active_runs: int = 2,
        reprocess_behavior: str = "completed",
        timeout: float = 900,
        leave_unpaused: bool = False,
    ) -> list[dict[str, Any]]:
        """Backfill ``dag_id`` for logical dates in [from_date, to_date] and wait for every run.

        Dates (``datetime.date``) mean local midnight in ``tz``: for a daily timetable in that zone,
        ``from_date=D1, to_date=D2`` gives one run per day D1..D2 (both included). Strings are ISO
        datetimes.

        On PostgreSQL a backfill is created by one call, as from the UI or ``airflow backfill create``
        (after waiting for a previous backfill of the DAG to be marked complete). On SQLite, the recipe that
        holds there: pause, create (retried on 503 and 409), unpause. Then the runs are polled. The
        backfill is cancelled only when waiting fails (docs/local-platform.md: cancelling pauses it).

        Returns:
            the backfill's runs (finished), ordered by logical date.
        """
        body = client.BackfillPostBody(
            dag_id=dag_id,
            from_date=_local_midnight(from_date, tz),
            to_date=_local_midnight(to_date, tz),
            dag_run_conf=dict(conf or {}),
            max_active_runs=max_active_runs,
            reprocess_behavior=client.ReprocessBehavior(reprocess_behavior),
        )
        dry = self.call(self.backfills.create_backfill_dry_run, body, idempotent=False)
        expected = {_instant(b.logical_date) for b in dry.backfills if b.logical_date is not None}
        if not expected:
            raise PlatformError(f"backfill {dag_id} [{from_date}, {to_date}] would create no runs")
        if self.sqlite:
            self.set_paused(dag_id, True)
            backfill = self._create_backfill_sqlite(body)
        else:
            # as a user does: the DAG unpaused (runs of a paused DAG stay queued), one create call; a
            # backfill of the DAG Airflow has not marked complete yet (a 30 s timer) is waited for first
            self._wait_no_active_backfill(dag_id, timeout)
            backfill = self.call(self.backfills.create_backfill, body, idempotent=False)
        self.set_paused(dag_id, False)
        ok = False
        runs: list[dict[str, Any]] = []

        def finished() -> list[dict[str, Any]] | None:
            nonlocal runs
            listed = self.dag_runs(dag_id, run_type="backfill", order_by="logical_date")
            runs = [r for r in listed if r["logical_date"] and _instant(r["logical_date"]) in expected]
            done = [r for r in runs if r["state"] in TERMINAL_RUN_STATES]
            return done if len(done) >= len(expected) else None

        try:
            done = poll_until(
                finished,
                timeout=timeout,
                interval=1,
                failure=lambda: (
                    f"backfill of {dag_id} not finished after {timeout:.0f} s:"
                    f" { {r['logical_date']: r['state'] for r in runs} }"
                ),
            )
            ok = True
            return done
        finally:
            if not ok:  # stop what is left of it (its queued runs are failed)
                try:
                    self.call(self.backfills.cancel_backfill, backfill.id)
                except ApiError as exc:
                    if exc.status != 409:
                        raise
            if not leave_unpaused:
                self.set_paused(dag_id, True)

    def active_backfills(self, dag_id: str) -> list[dict[str, Any]]:
        """The backfills of ``dag_id`` that Airflow has not marked complete."""
        method = self.backfills.list_backfills_without_preload_content
        return [b for b in self.read(method, dag_id, limit=1000)["backfills"] if not b.get("completed_at")]

    def _wait_no_active_backfill(self, dag_id: str, timeout: float) -> None:
        active: list[dict[str, Any]] = []

        def none_active() -> bool | None:
            nonlocal active
            active = self.active_backfills(dag_id)
            return None if active else True

        if self.active_backfills(dag_id):
            log(f"{dag_id}: waiting for the previous backfill to be marked complete (a 30 s timer)")
        poll_until(
            none_active,
            timeout=min(timeout, 120),
            interval=1,
            failure=lambda: f"{dag_id}: backfill(s) {[b['id'] for b in active]} still not complete",
        )

    def _create_backfill_sqlite(self, body: client.BackfillPostBody) -> client.BackfillResponse:
        def retried(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            log(f"backfill create: {error} (retry {state.attempt_number})")

        def give_up(state: tenacity.RetryCallState) -> None:
            raise PlatformError(
                f"could not create a backfill of {body.dag_id} after {BACKFILL_CREATE_ATTEMPTS} attempts"
                f" ({2 * BACKFILL_CREATE_ATTEMPTS} s)"
            )

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(BACKFILL_CREATE_ATTEMPTS),
            wait=tenacity.wait_fixed(2),
            retry=tenacity.retry_if_exception(lambda e: isinstance(e, ApiError) and e.status in (409, 503)),
            before_sleep=retried,
            retry_error_callback=give_up,
        )
        created = retrying(self.call, self.backfills.create_backfill, body, idempotent=False)
        assert isinstance(created, client.BackfillResponse)
        return created
