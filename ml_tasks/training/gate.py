"""The promotion gate: may a candidate model become the champion?

A pure function over metric dicts: beat every baseline, stay within ``margin`` of the champion, pass the
ONNX checks; ``force`` promotes anyway and says what it overrode (docs/training.md). With paired confidence
intervals of the differences on the same rows (``comparisons``), "beats" means the interval's lower bound
is above ``-margin`` (docs/evaluation.md).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from ml_tasks.contract import CHALLENGER, CHAMPION

#: how a forced decision's reasons begin: each is a blocking reason the force overrode
FORCED_PREFIX = "forced promotion despite: "

# Metrics where a larger value is better; for the others (log loss, ECE, brier) smaller is better.
HIGHER_IS_BETTER = {"roc_auc", "pr_auc", "accuracy", "f1", "precision", "recall", "average_precision"}
LOWER_IS_BETTER = {"log_loss", "ece", "brier"}


@dataclass(frozen=True)
class Decision:
    """The gate's verdict.

    Attributes:
        promote: True when the candidate becomes the champion (possibly forced).
        reasons: Human sentences with numbers: why it passed, or what blocked it.
        forced: True when ``force`` overrode at least one blocking reason.
        details: Machine-readable numbers behind the reasons (for JSON/XCom and version tags).
    """

    promote: bool
    reasons: list[str]
    forced: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def decision(self) -> str:
        """``champion`` or ``challenger``: the alias the candidate gets."""
        return CHAMPION if self.promote else CHALLENGER

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (plus the ``decision`` label)."""
        return {**asdict(self), "decision": self.decision}


def _metric(scores: Mapping[str, Any], metric: str, who: str) -> float:
    if not isinstance(scores, Mapping):
        raise TypeError(f"{who}: expected a dict of metrics, got {type(scores).__name__}")
    if metric not in scores:
        raise KeyError(f"{who}: metric {metric!r} missing (has {sorted(scores)})")
    value = scores[metric]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{who}: metric {metric!r} must be a number, got {value!r}")
    return float(value)


def _fmt(value: float) -> str:
    return f"{value:.4f}"


def _interval(comparisons: Mapping[str, Any] | None, metric: str, who: str) -> Mapping[str, Any] | None:
    """The paired interval of candidate minus ``who`` (``champion`` or a baseline name), if given."""
    if not comparisons or comparisons.get("metric") != metric:
        return None
    found = (
        comparisons.get("champion") if who == "champion" else (comparisons.get("baselines") or {}).get(who)
    )
    return found if isinstance(found, Mapping) else None


def _ci_text(ci: Mapping[str, Any], margin: float) -> tuple[bool, str]:
    """Whether the lower bound clears ``-margin``, and the sentence that says so."""
    beats = float(ci["low"]) > -margin
    return beats, (
        f"difference {float(ci['delta']):+.4f}, {float(ci['level']):.0%} CI [{float(ci['low']):+.4f},"
        f" {float(ci['high']):+.4f}] on {ci['rows']} paired rows: lower bound"
        f" {'above' if beats else 'not above'} -{margin:g}"
    )


def decide(
    candidate: Mapping[str, Any],
    baselines: Mapping[str, Mapping[str, Any]],
    champion: Mapping[str, Any] | None,
    onnx_check: Mapping[str, Any],
    *,
    metric: str = "roc_auc",
    margin: float = 0.005,
    force: bool = False,
    comparisons: Mapping[str, Any] | None = None,
) -> Decision:
    """Decide whether ``candidate`` is promoted to champion.

    Args:
        candidate: The candidate's metrics on the evaluation window (must hold ``metric``).
        baselines: Baseline name -> its metrics on the same window; at least one baseline is required
            (a model that was never compared with a baseline is not promotable).
        champion: The current champion's metrics on the same window, or None when there is none yet.
        onnx_check: The result of ``check_onnx`` (``passed`` bool and ``reasons`` list).
        metric: The gate metric; higher is better unless it is one of ``LOWER_IS_BETTER``.
        margin: How much worse than the champion the candidate may be (absolute, in metric units).
        force: Promote even when a check fails; recorded as ``forced=True`` with the blocking reasons.
        comparisons: ``{"metric", "baselines": {name: interval}, "champion": interval | None}``: paired
            confidence intervals of candidate minus each model on the same rows
            (:func:`ml_tasks.models.auc_compare.paired_auc_difference`); where one is given for ``metric``,
            "beats" / "within margin" means its lower bound is above ``-margin``.

    Returns:
        The decision with human-readable reasons and the numbers behind them.

    Raises:
        ValueError / KeyError / TypeError: unusable arguments (no baselines, a missing or non-numeric
            metric, a negative margin, an ONNX check without ``passed``).
    """
    if not math.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number >= 0, got {margin}")
    if not baselines:
        raise ValueError("baselines: at least one baseline is required to gate a candidate")
    if "passed" not in onnx_check or not isinstance(onnx_check["passed"], bool):
        raise KeyError("onnx_check: expected the check_onnx result with a boolean 'passed'")
    higher = metric not in LOWER_IS_BETTER

    cand = _metric(candidate, metric, "candidate")
    blocking: list[str] = []
    passing: list[str] = []
    details: dict[str, Any] = {"metric": metric, "margin": margin, "candidate": cand, "baselines": {}}
    if not math.isfinite(cand):
        blocking.append(f"candidate {metric} is {cand}: not a finite number")

    for name in sorted(baselines):
        base = _metric(baselines[name], metric, f"baseline {name}")
        beats = cand > base if higher else cand < base
        ci = _interval(comparisons, metric, name)
        details["baselines"][name] = {"value": base, "beaten": bool(beats)}
        if ci is not None and math.isfinite(base):
            beats, text = _ci_text(ci, margin)
            details["baselines"][name] = {"value": base, "beaten": beats, "interval": dict(ci)}
            verb = "beats" if beats else "does not beat"
            (passing if beats else blocking).append(
                f"{metric} {_fmt(cand)} {verb} baseline {name} {_fmt(base)}: {text}"
            )
        elif not math.isfinite(base):
            # a baseline that could not be scored is not a bar the candidate cleared: say so
            blocking.append(f"baseline {name} has no finite {metric} ({base}): it cannot be compared")
        elif beats:
            passing.append(f"{metric} {_fmt(cand)} beats baseline {name} {_fmt(base)}")
        else:
            blocking.append(f"{metric} {_fmt(cand)} does not beat baseline {name} {_fmt(base)}")

    if champion is None:
        details["champion"] = None
        passing.append("no current champion: the first model only has to beat the baselines")
    else:
        champ = _metric(champion, metric, "champion")
        # positive delta = candidate better, whatever the metric's direction
        delta = cand - champ if higher else champ - cand
        ok = delta >= -margin
        ci = _interval(comparisons, metric, "champion")
        details["champion"] = {"value": champ, "delta": delta, "within_margin": ok}
        if ci is not None and math.isfinite(champ):
            ok, text = _ci_text(ci, margin)
            details["champion"] = {"value": champ, "delta": delta, "within_margin": ok, "interval": dict(ci)}
            (passing if ok else blocking).append(
                f"{metric} {_fmt(cand)} vs champion {_fmt(champ)}: {text}"
                + ("" if ok else " (worse than the champion by more than the margin)")
            )
        elif not math.isfinite(champ):
            blocking.append(
                f"champion has no finite {metric} ({champ}) on this window: it cannot be compared"
            )
        elif ok:
            passing.append(
                f"{metric} {_fmt(cand)} vs champion {_fmt(champ)} (delta {delta:+.4f}, margin {margin:g})"
            )
        else:
            blocking.append(
                f"{metric} {_fmt(cand)} is worse than champion {_fmt(champ)} by {-delta:.4f} "
                f"(more than the margin {margin:g})"
            )

    onnx_passed = bool(onnx_check["passed"])
    details["onnx_passed"] = onnx_passed
    if onnx_passed:
        passing.append("ONNX checks passed")
    else:
        onnx_reasons = [str(r) for r in onnx_check.get("reasons", [])] or ["no reason recorded"]
        blocking.append("ONNX checks failed: " + "; ".join(onnx_reasons))

    details["blocking"] = list(blocking)
    if not blocking:
        return Decision(promote=True, reasons=passing, forced=False, details=details)
    if force:
        reasons = [f"{FORCED_PREFIX}{r}" for r in blocking]
        return Decision(promote=True, reasons=reasons, forced=True, details=details)
    return Decision(promote=False, reasons=blocking, forced=False, details=details)
