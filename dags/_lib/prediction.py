"""Decisions of taxi_batch_predict: which shard and commit tasks a run maps, and its one predictions event."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException


def shard_plan(
    intervals: list[list[str]], resolved: dict[str, Any], shards: int, run_id: str
) -> dict[str, list[list[str]]]:
    """The argv of every shard task (intervals x shards) and of every commit task (one per interval).

    Raises:
        AirflowSkipException: the model alias does not exist yet (no champion): nothing to score with.
    """
    if resolved.get("version") is None:
        raise AirflowSkipException(f"nothing scored: {resolved.get('reason') or 'the model does not exist'}")
    model = f"{resolved['name']}/{resolved['version']}"
    # the staging key must be a path segment: run ids carry ':' and '+'
    key = re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)
    common = ["--model", model, "--shards", str(shards), "--run-key", key]
    return {
        "shards": [[*iv, "--shard", str(i), *common] for iv in intervals for i in range(shards)],
        "commits": [[*iv, *common] for iv in intervals],
    }


def predictions_event(commits: Any, run_id: str) -> dict[str, Any]:
    """The extra of the run's one ``flywheel-predictions`` event: every committed interval and partition,
    in day order, and the model version that scored them (see ``_lib.assets``).

    Args:
        commits: the summaries of the run's commit tasks (all succeeded: this task runs after all of them).

    Raises:
        AirflowSkipException: there were no commits (nothing to announce).
        AirflowFailException: a commit returned no summary with an interval: announcing the others alone
            would leave its days unmonitored, silently.
    """
    commits = list(commits or [])
    if not commits:
        raise AirflowSkipException("no interval committed: no flywheel-predictions event")
    bad = [
        i
        for i, c in enumerate(commits)
        if not (isinstance(c, Mapping) and isinstance(c.get("interval"), Mapping))
    ]
    if bad:
        raise AirflowFailException(
            f"predict-commit map index(es) {bad} returned no summary with an interval: which days they"
            " committed is unknown; nothing is announced (clear those tasks to re-run them)"
        )
    found = sorted(commits, key=lambda c: str(c["interval"].get("start")))
    partitions = [
        {k: p[k] for k in ("dt", "uri", "rows") if k in p}
        for c in found
        for p in c.get("partitions") or []
        if isinstance(p, Mapping)
    ]
    models = sorted({f"{c['model'].get('name')}/{c['model'].get('version')}"
                     for c in found if isinstance(c.get("model"), Mapping)})  # fmt: skip
    return {
        "step": "predict-commit",
        "intervals": [dict(c["interval"]) for c in found],
        "partitions": partitions,
        "models": models,
        "run_id": run_id,
    }
