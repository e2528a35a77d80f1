"""The monitoring decision: verdict, hysteresis, cooldown and whether to retrain (pure functions, no I/O).

Everything is judged in data time (interval dates, never the wall clock), so a backfill decides as the
live run would; earlier decisions are those of intervals starting before this one. The rules are in
``docs/monitoring.md``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from ml_tasks.intervals import Interval

if TYPE_CHECKING:
    from ml_tasks.settings import Settings

DRIFT = "drift"
NO_DRIFT = "no_drift"
PERFORMANCE = "performance"
#: too few current values to tell drift from noise: neither an alert nor a quiet interval, so it neither
#: counts towards the hysteresis nor breaks its chain
INSUFFICIENT_DATA = "insufficient_data"
ALERTS = (DRIFT, PERFORMANCE)
FORMAT_VERSION = 1


@dataclass(frozen=True)
class PolicyConfig:
    """The thresholds of the decision (from the settings)."""

    drift_share: float = 0.3
    prediction_drift: bool = True
    hysteresis: int = 2
    cooldown_days: int = 7
    max_auc_drop: float = 0.05

    @classmethod
    def from_settings(cls, settings: Settings) -> PolicyConfig:
        return cls(
            drift_share=settings.monitor_drift_share,
            prediction_drift=settings.monitor_prediction_drift,
            hysteresis=settings.drift_hysteresis,
            cooldown_days=settings.retrain_cooldown_days,
            max_auc_drop=settings.monitor_max_auc_drop,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))


def _interval_of(decision: Mapping[str, Any]) -> tuple[dt.date, dt.date]:
    interval = decision["interval"]
    return _date(interval["start"]), _date(interval["end"])


def _version_of(decision: Mapping[str, Any]) -> str | None:
    model = decision.get("model") or {}
    version = model.get("version")
    return None if version is None else str(version)


def earlier_decisions(previous: Sequence[Mapping[str, Any]], interval: Interval) -> list[Mapping[str, Any]]:
    """The decisions of intervals that start before ``interval``, ordered by interval start."""
    earlier = [d for d in previous if _interval_of(d)[0] < interval.start]
    return sorted(earlier, key=_interval_of)


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def verdict(
    drift: Mapping[str, Any], performance: Mapping[str, Any] | None, config: PolicyConfig
) -> tuple[str, list[str], dict[str, Any]]:
    """This interval's verdict, the sentences that explain it and the performance judgement."""
    reasons: list[str] = []
    share = drift.get("drift_share")
    if drift.get("counted_columns") is not None:
        counted = len(drift["counted_columns"])
    else:  # a result without the field counts every tested input
        counted = len(drift.get("tested_columns") or []) + sum(
            1 for c in (drift.get("columns") or {}).values() if c.get("method") == "all_null_in_one_frame"
        )
    drifted = list(drift.get("drifted_columns") or [])
    dataset_drift = share is not None and share >= config.drift_share
    insufficient = drift.get("insufficient_data")
    if share is None and insufficient:
        reasons.append(f"insufficient data for a drift verdict: {insufficient}")
    elif share is None:
        reasons.append(
            "no input column could be compared (no current rows or every column null): no data drift"
        )
    else:
        relation = ">=" if dataset_drift else "<"
        named = f" ({', '.join(drifted)})" if drifted else ""
        reasons.append(
            f"{len(drifted)} of {counted} input column(s) drifted{named}: share {share:.2f} {relation}"
            f" {config.drift_share:.2f}" + ("" if dataset_drift else ", no dataset drift")
        )
    others = list(drift.get("drifted_not_counted") or [])
    if others:
        reasons.append(
            f"{len(others)} feature-store column(s) drifted too, reported but not counted in the share"
            f" (they trend with the store's history): {', '.join(others[:5])}"
            + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        )
    prediction = drift.get("prediction_drift") or None
    prediction_drifted = bool(prediction and prediction.get("drifted"))
    if prediction and prediction.get("insufficient_data"):
        reasons.append(f"prediction drift not judged: {prediction['insufficient_data']}")
    elif prediction:
        rule = "counts" if config.prediction_drift else "is reported only (monitor_prediction_drift off)"
        reasons.append(
            f"prediction drift {'detected' if prediction_drifted else 'not detected'}: score"
            f" {prediction.get('method')} {_f(prediction.get('score'))} vs threshold"
            f" {_f(prediction.get('threshold'))}" + (f"; it {rule}" if prediction_drifted else "")
        )
    perf = judge_performance(performance, config)
    if perf.get("reason"):
        reasons.append(perf["reason"])
    if dataset_drift or (prediction_drifted and config.prediction_drift):
        return DRIFT, reasons, perf
    if perf["alert"]:
        return PERFORMANCE, reasons, perf
    if share is None and insufficient:
        return INSUFFICIENT_DATA, reasons, perf
    return NO_DRIFT, reasons, perf


def judge_performance(performance: Mapping[str, Any] | None, config: PolicyConfig) -> dict[str, Any]:
    """The performance block with ``alert`` and ``auc_drop`` decided against ``max_auc_drop``."""
    if not performance:
        return {"status": "not_evaluated", "alert": False, "reason": None}
    out = dict(performance)
    status = out.get("status")
    if status != "evaluated":
        out["alert"] = False
        out.setdefault("reason", f"performance not evaluated: {status}")
        return out
    auc = (out.get("metrics") or {}).get("roc_auc")
    baseline = (out.get("baseline") or {}).get("roc_auc")
    if auc is None or baseline is None:
        out.update(alert=False, auc_drop=None, reason="performance: no ROC-AUC or no training-time baseline")
        return out
    drop = float(baseline) - float(auc)
    alert = drop > config.max_auc_drop
    interval = out.get("interval") or {}
    out.update(
        alert=alert,
        auc_drop=drop,
        reason=(
            f"labelled ROC-AUC {auc:.3f} on [{interval.get('start')}, {interval.get('end')}) vs"
            f" {baseline:.3f} at training time ({(out.get('baseline') or {}).get('source')}): drop {drop:.3f}"
            f" {'>' if alert else '<='} {config.max_auc_drop:.3f}" + (", performance alert" if alert else "")
        ),
    )
    return out


def consecutive_alerts(
    earlier: Sequence[Mapping[str, Any]], interval: Interval, version: str | None, alert: bool
) -> tuple[int, str | None]:
    """The consecutive alerting intervals ending with this one (0 when this one does not alert), and why
    the chain stopped where it did (None when it reached a non-alerting interval or the first decision)."""
    if not alert:
        return 0, None
    count, start = 1, interval.start
    for decision in reversed(earlier):
        prev_start, prev_end = _interval_of(decision)
        if decision.get("verdict") == INSUFFICIENT_DATA and prev_end == start:
            start = prev_start  # bridges the chain, counts for nothing
            continue
        if prev_end != start:
            return count, (
                f"the previous monitored interval [{prev_start}, {prev_end}) does not end where the next one"
                f" starts ({start}): the consecutive count restarts"
            )
        if _version_of(decision) != version:
            return count, (
                f"interval [{prev_start}, {prev_end}) was monitored on model version {_version_of(decision)},"
                f" this one on {version}: the consecutive count restarts for the new model"
            )
        if decision.get("verdict", NO_DRIFT) == NO_DRIFT:
            return count, None
        count += 1
        start = prev_start
    return count, None


def cooldown_state(
    earlier: Sequence[Mapping[str, Any]], interval: Interval, config: PolicyConfig
) -> dict[str, Any]:
    """The latest earlier retrain request and whether it still blocks one now (data time)."""
    requested = [d for d in earlier if d.get("retrain")]
    if not requested:
        return {
            "active": False,
            "days": config.cooldown_days,
            "last_retrain_interval_end": None,
            "days_since": None,
        }
    last_end = _interval_of(requested[-1])[1]
    since = (interval.end - last_end).days
    return {
        "active": since < config.cooldown_days,
        "days": config.cooldown_days,
        "last_retrain_interval_end": last_end.isoformat(),
        "days_since": since,
    }


def decide(
    *,
    interval: Interval,
    model: Mapping[str, Any],
    drift: Mapping[str, Any],
    performance: Mapping[str, Any] | None,
    previous: Sequence[Mapping[str, Any]],
    config: PolicyConfig,
    model_trained_until: dt.date | None = None,
    data_quality: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The decision document of one interval (JSON-serialisable, stable keys; see the module docstring).

    Args:
        interval: the monitored interval.
        model: ``{"name", "version", ...}`` of the model that made the predictions.
        drift: ``DriftResult.to_dict()`` (or the same keys).
        performance: the performance block (``status``, ``metrics``, ``baseline``, ``interval``) or None.
        previous: earlier decision documents (any order; later or equal intervals are ignored).
        config: the thresholds.
        model_trained_until: the end of the model's training data, when known.
        data_quality: a short data-quality digest to carry along (optional).
    """
    version = None if model.get("version") is None else str(model["version"])
    result, reasons, perf = verdict(drift, performance, config)
    alert = result in ALERTS
    earlier = earlier_decisions(previous, interval)
    consecutive, chain_note = consecutive_alerts(earlier, interval, version, alert)
    cooldown = cooldown_state(earlier, interval, config)
    retrain = False
    if alert:
        if chain_note:
            reasons.append(chain_note)
        if consecutive < config.hysteresis:
            reasons.append(
                f"{result} on {consecutive} consecutive interval(s), hysteresis needs {config.hysteresis}:"
                " no retrain yet"
            )
        elif cooldown["active"]:
            reasons.append(
                "cooldown: last retrain requested for interval ending"
                f" {cooldown['last_retrain_interval_end']},"
                f" {cooldown['days_since']} of {config.cooldown_days} days ago: no retrain"
            )
        elif model_trained_until is not None and model_trained_until >= interval.end:
            reasons.append(
                f"model version {version} was trained on data up to {model_trained_until} (exclusive), which"
                f" covers this interval (ends {interval.end}): retraining would see no newer data, no retrain"
            )
        else:
            retrain = True
            since = cooldown["days_since"]
            reasons.append(
                f"{result} on {consecutive} consecutive interval(s) (hysteresis {config.hysteresis}), "
                + (
                    "no earlier retrain request"
                    if since is None
                    else f"last retrain requested {since} days before (cooldown {config.cooldown_days})"
                )
                + ": retrain"
            )
    if result == INSUFFICIENT_DATA:
        reasons.append(
            "insufficient_data neither counts towards the hysteresis nor breaks its chain: no retrain"
        )
    prediction = drift.get("prediction_drift") or None
    return {
        "format_version": FORMAT_VERSION,
        "model": dict(model),
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "verdict": result,
        "alert": alert,
        "retrain": retrain,
        "consecutive_drift": consecutive,
        "reasons": reasons,
        "thresholds": config.to_dict(),
        "drift": {
            "dataset_drift": bool(
                drift.get("drift_share") is not None and drift["drift_share"] >= config.drift_share
            ),
            "drift_share": drift.get("drift_share"),
            "drifted_columns": list(drift.get("drifted_columns") or []),
            "drifted_not_counted": list(drift.get("drifted_not_counted") or []),
            "tested_columns": list(drift.get("tested_columns") or []),
            "excluded_columns": dict(drift.get("excluded_columns") or {}),
            "degenerate_columns": dict(drift.get("degenerate_columns") or {}),
            "insufficient_data": drift.get("insufficient_data"),
            "calibration": drift.get("calibration"),
            "column_methods": {
                name: {
                    k: c.get(k)
                    for k in (
                        "method",
                        "threshold",
                        "score",
                        "sample_size",
                        "null_threshold",
                        "decided_by",
                        "insufficient_data",
                    )
                    if k in c or k in ("method", "threshold", "score")
                }
                for name, c in sorted((drift.get("columns") or {}).items())
                if c.get("drifted") is not None or c.get("insufficient_data")
            },
        },
        "prediction_drift": dict(prediction) if prediction else None,
        "performance": perf,
        "cooldown": cooldown,
        "model_trained_until": model_trained_until.isoformat() if model_trained_until else None,
        "data_quality": dict(data_quality) if data_quality else None,
    }
