"""The model card: a markdown summary of a candidate's evaluation report and its metadata.

Deterministic: the same report and metadata give the same text (no clock, no host; the only dates are
the windows in the report). Leakage warnings are printed near the top, not buried.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ml_tasks.contract import REGISTERED_MODEL

METRIC_COLUMNS = (
    ("roc_auc", "ROC-AUC"),
    ("pr_auc", "PR-AUC"),
    ("log_loss", "log loss"),
    ("accuracy", "accuracy"),
    ("brier", "Brier"),
    ("ece", "ECE"),
)


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        # tiny bounds (1e-6) would print as 0.0000
        return f"{value:.1e}" if 0 < abs(value) < 10**-digits else f"{value:.{digits}f}"
    return str(value)


def _cell(value: Any) -> str:
    """A markdown table cell: pipes escaped, newlines flattened."""
    return _num(value).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _get(meta: Mapping[str, Any], *paths: str) -> Any:
    """The first present value among dotted ``paths`` of ``meta`` (flat or nested metadata)."""
    for path in paths:
        node: Any = meta
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                node = None
                break
            node = node[part]
        if node is not None:
            return node
    return None


def _config(config: Any) -> str:
    if isinstance(config, Mapping) and config:
        return ", ".join(f"{k}={v}" for k, v in sorted(config.items()))
    return "n/a"


def _champion(report: Mapping[str, Any], meta: Mapping[str, Any]) -> str:
    """Which champion the candidate was compared with (registry version when known)."""
    if not report.get("champion"):
        return "none: the first model is compared with the baselines only"
    info = meta.get("champion")
    fields = ("name", "version", "run_id")
    if isinstance(info, Mapping):
        values = {f: info.get(f) for f in fields}
    else:  # a registry VersionInfo dataclass (or None)
        values = {f: getattr(info, f, None) for f in fields}
    if values["version"] is None:
        return "the current champion (version not recorded)"
    run = f", run {values['run_id']}" if values["run_id"] else ""
    return f"{values['name'] or 'model'} version {values['version']}{run}"


def _window(info: Mapping[str, Any] | None) -> str:
    if not info:
        return "n/a"
    rate = info.get("label_rate")
    return (
        f"{info.get('start', '?')} .. {info.get('end', '?')}, {_num(info.get('rows'))} rows, "
        f"label rate {_num(rate, 3) if rate is not None else 'n/a'}"
    )


def model_card(report: Mapping[str, Any], model_meta: Mapping[str, Any]) -> str:
    """Markdown model card of an evaluation ``report`` (from ``evaluate_candidate``) and ``model_meta``.

    ``model_meta`` is the bundle's model.json (any missing field prints as "n/a").
    """
    candidate = report["candidate"]
    name = _get(model_meta, "name", "registered_model") or REGISTERED_MODEL
    lines: list[str] = [f"# Model card: {name}", ""]

    warnings = report.get("leakage_warnings") or []
    if warnings:
        lines += [
            "> **LEAKAGE WARNING**: a single input alone reaches a very high ROC-AUC.",
            ">",
        ]
        lines += [f"> - {w['message']}" for w in warnings]
        lines += [
            ">",
            "> The model's scores lean on these inputs: check that they exist, with the same meaning,",
            "> at prediction time, and read the metrics below with that in mind.",
            "",
        ]

    windows = report.get("windows", {})
    inputs = report.get("inputs", {})
    architecture = _get(model_meta, "architecture", "model_type") or "TabularNet (embeddings + MLP)"
    lines += ["## Model", ""]
    lines += [
        f"- Task: binary classification, label `{report.get('settings', {}).get('label', 'big_tipper')}` "
        "(tips > 20% of the fare)",
        f"- Architecture: {architecture}",
        f"- Config: {_config(_get(model_meta, 'config'))}",
        f"- Decision threshold: {_num(candidate.get('threshold'))}",
        f"- Categorical inputs: {', '.join(inputs.get('categorical', [])) or 'n/a'}",
        f"- Numeric inputs: {', '.join(inputs.get('numeric', [])) or 'n/a'}",
        f"- Seed: {_num(_get(model_meta, 'seed'))}",
        f"- MLflow run: {_num(_get(model_meta, 'mlflow_run_id', 'run_id'))}",
        f"- Feature service: {_num(_get(model_meta, 'feature_service'))}",
    ]
    versions = _get(model_meta, "library_versions", "versions")
    if isinstance(versions, Mapping) and versions:
        lines.append("- Libraries: " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    lines += ["", "## Data", ""]
    lines += [
        f"- Training set: `{_num(_get(model_meta, 'training_set_uri', 'training_set.uri'))}`",
        f"- Training set sha256: `{_num(_get(model_meta, 'training_set_sha256', 'training_set.sha256'))}`",
        f"- Train window: {_window(windows.get('train'))}",
        f"- Evaluation window: {_window(windows.get('eval'))}",
    ]
    if _get(model_meta, "eval_set"):
        lines.append(
            f"- Evaluation set: `{_get(model_meta, 'eval_set')}` "
            f"(sha256 `{_num(_get(model_meta, 'eval_set_sha256'))}`)"
        )
    lines.append(f"- Champion compared on the same rows: {_champion(report, model_meta)}")
    later = windows.get("eval_after_train")
    if later is False:
        lines.append(
            "- **The evaluation window overlaps the training window**: the metrics may be optimistic."
        )
    elif later is True:
        lines.append("- The evaluation window starts after the training window ends (no time overlap).")

    lines += ["", "## Metrics on the evaluation window", ""]
    rows: list[list[Any]] = []
    for label, entry in (("candidate", candidate), ("champion", report.get("champion"))):
        if entry:
            rows.append(
                [
                    f"**{label}**" if label == "candidate" else label,
                    *(entry["metrics"].get(k) for k, _ in METRIC_COLUMNS),
                ]
            )
    for bname, entry in sorted(report.get("baselines", {}).items()):
        rows.append([f"baseline: {bname}", *(entry["metrics"].get(k) for k, _ in METRIC_COLUMNS)])
    lines += _table(["model", *(title for _, title in METRIC_COLUMNS)], rows)
    lines += ["", "Accuracy at each model's own threshold; lower is better for log loss, Brier and ECE.", ""]

    cal = report.get("calibration", {})
    lines += ["## Calibration", ""]
    lines += [
        f"Expected calibration error {_num(cal.get('ece'))} over {cal.get('bins', '?')} equal-width bins.",
        "",
    ]
    lines += [f"![reliability diagram]({cal.get('plot', 'reliability.png')})", ""]
    lines += _table(
        ["bin", "rows", "mean predicted", "observed rate"],
        [
            [f"{r['lower']:.1f}-{r['upper']:.1f}", r["count"], r["mean_predicted"], r["observed_rate"]]
            for r in cal.get("table", [])
        ],
    )

    lines += ["", "## Slices", ""]
    for dim, slice_rows in report.get("slices", {}).items():
        lines += [f"### {dim}", ""]
        lines += _table(
            ["slice", "rows", "positive rate", "mean score", "ROC-AUC", "accuracy"],
            [
                [r["slice"], r["rows"], r["positive_rate"], r["mean_score"], r["roc_auc"], r["accuracy"]]
                for r in slice_rows
            ],
        )
        lines.append("")

    lines += ["## Behavioural tests", ""]
    tests = report.get("behavioural_tests", [])
    lines += _table(
        ["test", "kind", "result", "measured", "bound", "rows"],
        [
            [
                t["name"],
                t["kind"],
                "skipped" if t.get("skipped") else ("PASS" if t["passed"] else "FAIL"),
                t.get("measured"),
                t.get("bound"),
                t.get("rows"),
            ]
            for t in tests
        ],
    )
    lines.append("")
    lines += [f"- `{t['name']}`: {t['why']}" for t in tests]
    lines += [
        "",
        "Invariance: measured = share of rows whose score moved by at most the bound (passes at >= "
        "the test's min_fraction). Directional: measured = mean score change of the perturbed rows.",
        "",
    ]

    lines += ["## Single-feature ROC-AUC", ""]
    threshold = report.get("settings", {}).get("leakage_threshold")
    lines += _table(
        ["feature", "ROC-AUC alone", "flag"],
        [
            [f, auc, "LEAKAGE WARNING" if threshold is not None and auc >= threshold else ""]
            for f, auc in report.get("single_feature_auc", {}).items()
        ],
    )
    lines += [
        "",
        "Numeric features score by their value, categorical ones by their train positive rate; "
        "max(auc, 1 - auc).",
        "",
    ]

    lines += ["## Limitations", ""]
    limitations = [
        "The label comes from recorded tips: cash tips are almost never recorded, so for cash trips the "
        "model predicts the recording, not the tipping behaviour.",
        "Trained and evaluated on Chicago taxi trips only; other cities, vehicle types or periods with "
        "different fare rules are out of scope.",
        "Trip duration, distance and fare are only known at the END of a trip: the model scores completed "
        "trips, not requests.",
    ]
    limitations += [f"Leakage: {w['feature']} alone reaches ROC-AUC {w['auc']:.3f}." for w in warnings]
    if later is False:
        limitations.append(
            "The evaluation window overlaps training in time: no test of behaviour on later data."
        )
    small = [
        f"{dim}={r['slice']} ({r['rows']} rows)"
        for dim, slice_rows in report.get("slices", {}).items()
        for r in slice_rows
        if r["roc_auc"] is None
    ]
    if small:
        limitations.append("ROC-AUC undefined (one class only) in slices: " + ", ".join(small) + ".")
    failed = [t["name"] for t in tests if not t["passed"]]
    if failed:
        limitations.append("Failed behavioural tests: " + ", ".join(failed) + ".")
    lines += [f"- {item}" for item in limitations]
    lines += [
        "",
        "## Intended use",
        "",
        "Batch scoring of completed Chicago taxi trips to estimate the probability of a big tip (> 20% of "
        "the fare), for analytics and the Flywheel reference pipeline. Not for decisions about individual "
        "drivers or passengers, and not a real-time pre-trip prediction.",
        "",
    ]
    return "\n".join(lines)
