"""The promotion gate: every branch of ``decide``."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ml_tasks.training.gate import Decision, decide

BASELINES = {
    "majority_class": {"roc_auc": 0.5},
    "payment_type_rule": {"roc_auc": 0.93},
    "gradient_boosted_tree": {"roc_auc": 0.957},
}
PASSED: dict[str, Any] = {"passed": True, "reasons": []}


def test_first_model_beating_every_baseline_is_promoted() -> None:
    d = decide({"roc_auc": 0.962}, BASELINES, None, PASSED)
    assert d.promote is True and d.forced is False
    assert d.decision == "champion"
    assert "roc_auc 0.9620 beats baseline gradient_boosted_tree 0.9570" in d.reasons
    assert any("no current champion" in r for r in d.reasons)
    assert d.details["champion"] is None
    assert d.details["baselines"]["payment_type_rule"] == {"value": 0.93, "beaten": True}


def test_first_model_not_beating_a_baseline_stays_challenger() -> None:
    d = decide({"roc_auc": 0.945}, BASELINES, None, PASSED)
    assert d.promote is False and d.forced is False
    assert d.decision == "challenger"
    assert d.reasons == ["roc_auc 0.9450 does not beat baseline gradient_boosted_tree 0.9570"]


def test_tie_with_a_baseline_does_not_beat_it() -> None:
    d = decide({"roc_auc": 0.957}, BASELINES, None, PASSED)
    assert d.promote is False
    assert d.reasons == ["roc_auc 0.9570 does not beat baseline gradient_boosted_tree 0.9570"]


def test_every_failing_baseline_is_listed() -> None:
    d = decide({"roc_auc": 0.9}, BASELINES, None, PASSED)
    assert d.reasons == [
        "roc_auc 0.9000 does not beat baseline gradient_boosted_tree 0.9570",
        "roc_auc 0.9000 does not beat baseline payment_type_rule 0.9300",
    ]


def test_slightly_worse_than_champion_within_margin_is_promoted() -> None:
    d = decide({"roc_auc": 0.960}, BASELINES, {"roc_auc": 0.964}, PASSED, margin=0.005)
    assert d.promote is True
    assert d.details["champion"]["within_margin"] is True
    assert d.details["champion"]["delta"] == pytest.approx(-0.004)


def test_worse_than_champion_beyond_margin_stays_challenger() -> None:
    d = decide({"roc_auc": 0.960}, BASELINES, {"roc_auc": 0.970}, PASSED, margin=0.005)
    assert d.promote is False
    assert d.reasons == [
        "roc_auc 0.9600 is worse than champion 0.9700 by 0.0100 (more than the margin 0.005)"
    ]


def test_zero_margin_requires_at_least_equal_to_champion() -> None:
    assert decide({"roc_auc": 0.97}, BASELINES, {"roc_auc": 0.97}, PASSED, margin=0.0).promote is True
    assert decide({"roc_auc": 0.9699}, BASELINES, {"roc_auc": 0.97}, PASSED, margin=0.0).promote is False


def test_failed_onnx_check_blocks_with_its_reasons() -> None:
    check = {"passed": False, "reasons": ["sha256 of model.onnx is abc, export recorded def"]}
    d = decide({"roc_auc": 0.97}, BASELINES, None, check)
    assert d.promote is False
    assert d.reasons == ["ONNX checks failed: sha256 of model.onnx is abc, export recorded def"]
    assert d.details["onnx_passed"] is False


def test_force_promotes_and_records_what_would_have_blocked() -> None:
    check = {"passed": False, "reasons": ["parity max abs diff 0.01 > tolerance 1e-05"]}
    d = decide({"roc_auc": 0.9}, BASELINES, {"roc_auc": 0.95}, check, force=True)
    assert d.promote is True and d.forced is True
    assert len(d.reasons) == 4  # two baselines, the champion, the ONNX check
    assert all(r.startswith("forced promotion despite: ") for r in d.reasons)
    assert d.details["blocking"][-1] == "ONNX checks failed: parity max abs diff 0.01 > tolerance 1e-05"


def test_force_without_anything_blocking_is_not_marked_forced() -> None:
    d = decide({"roc_auc": 0.99}, BASELINES, None, PASSED, force=True)
    assert d.promote is True and d.forced is False


def test_lower_is_better_metric() -> None:
    baselines = {"majority_class": {"log_loss": 0.6}}
    assert decide({"log_loss": 0.2}, baselines, {"log_loss": 0.21}, PASSED, metric="log_loss").promote
    d = decide({"log_loss": 0.3}, baselines, {"log_loss": 0.2}, PASSED, metric="log_loss", margin=0.05)
    assert d.promote is False
    assert d.reasons == [
        "log_loss 0.3000 is worse than champion 0.2000 by 0.1000 (more than the margin 0.05)"
    ]


def test_nan_candidate_is_blocked() -> None:
    d = decide({"roc_auc": float("nan")}, BASELINES, None, PASSED)
    assert d.promote is False
    assert d.reasons[0] == "candidate roc_auc is nan: not a finite number"


def test_non_finite_baseline_or_champion_blocks_with_a_clear_reason() -> None:
    d = decide({"roc_auc": 0.97}, {"rule": {"roc_auc": float("nan")}}, None, PASSED)
    assert d.promote is False
    assert d.reasons == ["baseline rule has no finite roc_auc (nan): it cannot be compared"]
    d = decide({"roc_auc": 0.97}, BASELINES, {"roc_auc": float("nan")}, PASSED)
    assert d.promote is False
    assert d.reasons == ["champion has no finite roc_auc (nan) on this window: it cannot be compared"]


def test_decision_serialises_to_json() -> None:
    d = decide({"roc_auc": 0.97}, BASELINES, {"roc_auc": 0.96}, PASSED)
    payload = json.loads(json.dumps(d.to_dict()))
    assert payload["decision"] == "champion"
    assert payload["promote"] is True
    assert payload["details"]["champion"]["value"] == 0.96


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"baselines": {}}, ValueError, "at least one baseline"),
        ({"margin": -0.1}, ValueError, "margin must be"),
        ({"candidate": {"pr_auc": 0.9}}, KeyError, "candidate: metric 'roc_auc' missing"),
        ({"candidate": {"roc_auc": "0.9"}}, TypeError, "must be a number"),
        ({"baselines": {"rule": {}}}, KeyError, "baseline rule: metric 'roc_auc' missing"),
        ({"champion": {"auc": 1}}, KeyError, "champion: metric 'roc_auc' missing"),
        ({"onnx_check": {"reasons": []}}, KeyError, "boolean 'passed'"),
    ],
)
def test_unusable_arguments_raise_clear_errors(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    args: dict[str, Any] = {
        "candidate": {"roc_auc": 0.97},
        "baselines": BASELINES,
        "champion": None,
        "onnx_check": PASSED,
        **kwargs,
    }
    margin = float(args.get("margin", 0.005))
    with pytest.raises(error, match=match):
        decide(args["candidate"], args["baselines"], args["champion"], args["onnx_check"], margin=margin)


def test_decision_is_frozen() -> None:
    d = Decision(promote=True, reasons=[], forced=False)
    with pytest.raises(AttributeError):
        d.promote = False  # type: ignore[misc]
