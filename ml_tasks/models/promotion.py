"""Promotion: the ``champion`` alias (what batch prediction serves) and ``challenger`` (the latest candidate
that was not promoted), with the gate's decision, reasons and any forcing recorded in version tags."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ml_tasks.contract import (
    CHALLENGER,
    CHAMPION,
    TAG_DECIDED_AT,
    TAG_DECISION,
    TAG_DETAILS,
    TAG_FORCE_REASON,
    TAG_FORCED,
    TAG_PREVIOUS_CHAMPION,
    TAG_REASONS,
)
from ml_tasks.models.registry import (
    RegistryError,
    Target,
    VersionInfo,
    alias_model_version,
    client_for,
    get_version,
)
from ml_tasks.models.version_tags import tag_value
from ml_tasks.writers import pause_point

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)


def _decision_fields(
    decision: Mapping[str, Any] | None, reasons: Sequence[str] | None, forced: bool | None
) -> tuple[list[str], bool, dict[str, Any] | None]:
    d = dict(decision or {})
    return (
        [str(r) for r in (reasons if reasons is not None else d.get("reasons", []))],
        bool(forced if forced is not None else d.get("forced", False)),
        d.get("details"),
    )


def _record_decision(
    client: MlflowClient,
    name: str,
    version: str,
    decision: str,
    reasons: Sequence[str],
    forced: bool,
    details: Mapping[str, Any] | None,
    force_reason: str | None,
) -> None:
    import datetime as dt

    tags = {
        TAG_DECISION: decision,
        TAG_REASONS: tag_value(list(reasons)),
        TAG_FORCED: "true" if forced else "false",
        TAG_DECIDED_AT: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if details is not None:
        tags[TAG_DETAILS] = tag_value(details)
    if force_reason:
        tags[TAG_FORCE_REASON] = tag_value(force_reason)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
    pause_point("decision-recorded")


def promote(
    target: Target,
    name: str,
    version: str,
    *,
    decision: Mapping[str, Any] | None = None,
    reasons: Sequence[str] | None = None,
    forced: bool | None = None,
    reason: str | None = None,
) -> VersionInfo:
    """Move the ``champion`` alias to ``version`` and record the decision in its tags.

    Args:
        target: Settings or a client.
        name: Registered model name.
        version: The version to promote.
        decision: ``Decision.to_dict()`` of the gate (reasons, forced, details are recorded).
        reasons: Reasons (override the decision's).
        forced: Forced flag (overrides the decision's).
        reason: The operator's reason for a forced promotion (``flywheel.promotion.force_reason``).

    The previous champion's version is kept in ``flywheel.promotion.previous_champion`` (rollback = promote
    it again). If ``version`` held the ``challenger`` alias, that alias is removed. Promoting the current
    champion again only refreshes the tags. MLflow sets tags and aliases in separate calls: the tags come
    first and the alias last, so an interrupted promotion leaves the decision recorded and the old alias
    in place, and its retry completes it (docs/reliability.md).
    """
    client = client_for(target)
    version = str(version)
    client.get_model_version(name, version)  # a clear MLflow error for a version that does not exist
    why, is_forced, details = _decision_fields(decision, reasons, forced)
    previous = alias_model_version(client, name, CHAMPION)
    if previous is not None and str(previous.version) != version:
        client.set_model_version_tag(name, version, TAG_PREVIOUS_CHAMPION, str(previous.version))
    _record_decision(client, name, version, CHAMPION, why, is_forced, details, reason if is_forced else None)
    # the challenger alias goes first: an interrupted promotion never leaves a version holding both
    current_challenger = alias_model_version(client, name, CHALLENGER)
    if current_challenger is not None and str(current_challenger.version) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_registered_model_alias(name, CHAMPION, version)
    log.info(
        "%s version %s is champion%s (previous: %s)",
        name, version, " (FORCED)" if is_forced else "", previous.version if previous else None,
    )  # fmt: skip
    return get_version(client, name, version)


def mark_challenger(
    target: Target,
    name: str,
    version: str,
    *,
    decision: Mapping[str, Any] | None = None,
    reasons: Sequence[str] | None = None,
    forced: bool | None = None,
) -> VersionInfo:
    """Point the ``challenger`` alias at ``version`` (not promoted) and record why in its tags.

    The champion alias is untouched.

    Raises:
        RegistryError: ``version`` is the current champion (a model cannot be both).
    """
    client = client_for(target)
    version = str(version)
    client.get_model_version(name, version)
    current = alias_model_version(client, name, CHAMPION)
    if current is not None and str(current.version) == version:
        raise RegistryError(f"{name} version {version} is the champion: it cannot also be the challenger")
    why, is_forced, details = _decision_fields(decision, reasons, forced)
    _record_decision(client, name, version, CHALLENGER, why, is_forced, details, None)
    client.set_registered_model_alias(name, CHALLENGER, version)
    log.info("%s version %s is challenger: %s", name, version, "; ".join(why))
    return get_version(client, name, version)
