"""The release steps of a candidate as the CLI runs them: register (a new version of the registered model)
and promote (the gate's decision applied to the aliases). The contract is in docs/training.md."""

from __future__ import annotations

import json
import logging
from typing import Any

from ml_tasks.contract import CHECK_JSON, DECISION_JSON, EVALUATION_JSON
from ml_tasks.models.tracking import RunKey
from ml_tasks.settings import Settings
from ml_tasks.storage import write_json
from ml_tasks.training.inputs import TrainingStepError, load_candidate

log = logging.getLogger(__name__)


def register(settings: Settings, bundle: str, key: RunKey) -> dict[str, Any]:
    """Register the exported ONNX model as a new version of the registered model (no alias yet).

    A candidate whose ONNX check failed is still registered when its file can be read (the gate then
    marks it challenger with the reasons, so the failure is visible in the registry); a file that cannot
    even be parsed is not registered, and the summary says why (promote records the decision).
    """
    from ml_tasks.models import registry, tracking

    candidate = load_candidate(bundle)
    check_file = candidate.path / CHECK_JSON
    check = json.loads(check_file.read_text()) if check_file.is_file() else None
    if check is None:
        raise TrainingStepError(f"bundle {bundle}: no {CHECK_JSON}: run check-onnx first")
    parent = str(candidate.metadata["mlflow_run_id"])
    with tracking.task_run(settings, key, parent_run_id=parent, experiment=settings.mlflow_experiment):
        try:
            version = registry.register_candidate(settings, candidate.path, model_name=settings.model_name)
        except Exception as exc:
            if check.get("passed"):
                raise  # a checked, valid file must register: this is a registry problem, retry
            reason = f"not registered: the ONNX file failed its check and cannot be read ({exc})"[:500]
            log.warning("%s", reason)
            return {"step": "register", "bundle": bundle, "model": settings.model_name, "registered": False,
                    "version": None, "reason": reason}  # fmt: skip
    return {"step": "register", "bundle": bundle, "model": settings.model_name, "registered": True, **version}


def _is(a: object, b: object) -> bool:
    return a is not None and b is not None and str(a) == str(b)


def champion_moved(current: object, compared: object, version: object, *, promote: bool, force: bool) -> bool:
    """Whether the champion changed since the gate compared with it, so the decision is stale.

    A retry of a promotion that moved the alias before it failed finds its own version as champion and
    the same decision: that is not a move (the retry completes it). A forced promotion never asks.
    """
    if force or current is None or _is(current, compared):
        return False
    return not (promote and _is(current, version))


def promote(
    settings: Settings,
    bundle: str,
    key: RunKey,
    *,
    margin: float | None = None,
    force: bool = False,
    force_reason: str | None = None,
) -> dict[str, Any]:
    """The gate: champion if it beats every baseline and the champion (within margin) and passed ONNX."""
    import mlflow

    from ml_tasks.models import promotion, registry, tracking
    from ml_tasks.training.gate import decide

    if force and not (force_reason or "").strip():
        raise TrainingStepError("--force needs --force-reason: a forced promotion must say why")
    candidate = load_candidate(bundle)
    for name in (EVALUATION_JSON, CHECK_JSON):
        if not (candidate.path / name).is_file():
            raise TrainingStepError(f"bundle {bundle}: no {name}: run evaluate and check-onnx first")
    report = json.loads((candidate.path / EVALUATION_JSON).read_text())
    check = json.loads((candidate.path / CHECK_JSON).read_text())
    gate = report["gate_inputs"]
    metric = settings.promotion_metric
    decision = decide(
        gate["candidate"],
        gate["baselines"],
        gate.get("champion"),
        check,
        metric=metric,
        margin=settings.promotion_margin if margin is None else margin,
        force=force,
        comparisons=gate.get("comparisons"),
    )
    version = registry.registered_version(settings, candidate.path, model_name=settings.model_name)
    if version is None and check.get("passed"):
        raise TrainingStepError(f"bundle {bundle} has no registered version: run register first")
    if version is None and decision.promote:
        raise TrainingStepError(f"bundle {bundle}: a forced promotion needs a registered version")
    # the champion the gate compared with must still be the champion (another run may have promoted)
    compared = (report.get("champion_version") or {}).get("version")
    current = registry.current_alias_version(settings, settings.model_name, "champion")
    if champion_moved(current, compared, version, promote=decision.promote, force=force):
        raise TrainingStepError(
            f"the champion moved from version {compared} to {current} after this candidate was evaluated:"
            " re-run evaluate (clear it in the UI) so the gate compares with the current champion"
        )
    parent = str(candidate.metadata["mlflow_run_id"])
    summary = decision.to_dict()
    with tracking.task_run(settings, key, parent_run_id=parent, experiment=settings.mlflow_experiment):
        if decision.promote:
            assert version is not None  # checked above: a promotion needs a registered version
            promotion.promote(settings, settings.model_name, version, decision=summary, reason=force_reason)
        elif version is not None:
            promotion.mark_challenger(settings, settings.model_name, version, decision=summary)
        mlflow.set_tags({"flywheel.promotion.decision": "champion" if decision.promote else "challenger",
                         "flywheel.promotion.forced": str(decision.forced).lower()})  # fmt: skip
        mlflow.log_text("\n".join(decision.reasons) or "all checks passed", "promotion_reasons.txt")
    result = {
        "step": "promote",
        "bundle": bundle,
        "model": settings.model_name,
        "version": str(version) if version is not None else None,
        "run_id": parent,
        "promoted": decision.promote,
        "alias": "champion" if decision.promote else ("challenger" if version is not None else None),
        "forced": decision.forced,
        "force_reason": force_reason if force else None,
        "reasons": decision.reasons,
        "metric": metric,
        "value": gate["candidate"].get(metric),
        "previous_champion": compared if _is(current, version) else current,
    }
    write_json(candidate.path / DECISION_JSON, result)
    log.info("promote %s v%s: %s (%s)", settings.model_name, version, result["alias"],
             "; ".join(decision.reasons) or "all checks passed")  # fmt: skip
    return result
