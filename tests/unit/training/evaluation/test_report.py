"""The whole report: artifacts written, gate inputs, the reliability plot, a one-class window refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ml_tasks.models import metrics as model_metrics
from ml_tasks.training.evaluation.report import evaluate_candidate, reliability_plot
from ml_tasks.training.gate import decide
from tests.unit.training.evaluation._tables import FnScorer, payment_fare_score


def test_reliability_plot_writes_a_deterministic_png(tmp_path: Path) -> None:
    table = model_metrics.calibration(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.6, 0.3])).table
    a = reliability_plot(table, tmp_path / "a" / "r.png")
    b = reliability_plot(table, tmp_path / "b.png")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert a.read_bytes() == b.read_bytes()
    assert not list(tmp_path.glob("**/.*.tmp"))


def test_evaluate_candidate_writes_the_artifacts(report: dict[str, Any]) -> None:
    out: Path = report["_out"]
    written = json.loads((out / "evaluation.json").read_text())
    assert written["candidate"]["metrics"] == pytest.approx(report["candidate"]["metrics"])
    assert (out / "reliability.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "model_card.md").read_text().startswith("# Model card")
    assert set(written["baselines"]) == {"majority_class", "payment_type_rule", "gradient_boosted_tree"}
    assert written["baselines"]["majority_class"]["metrics"]["roc_auc"] == 0.5
    assert written["champion"]["metrics"]["roc_auc"] == 0.5
    assert written["windows"]["eval_after_train"] is True
    assert written["windows"]["eval"]["rows"] == 1500
    assert written["leakage_warnings"][0]["feature"] == "payment_type"


def test_gate_inputs_feed_the_gate(report: dict[str, Any]) -> None:
    g = report["gate_inputs"]
    assert g["champion"]["roc_auc"] == 0.5
    decision = decide(g["candidate"], g["baselines"], g["champion"], {"passed": True, "reasons": []})
    cand, gbt = g["candidate"]["roc_auc"], g["baselines"]["gradient_boosted_tree"]["roc_auc"]
    assert decision.promote is (cand > max(b["roc_auc"] for b in g["baselines"].values()))
    assert decision.details["baselines"]["gradient_boosted_tree"]["value"] == gbt
    assert g["behavioural_passed"] is True
    assert len(g["eval_window"]["trip_keys_sha256"]) == 64

    # paired intervals on the same rows: the champion (constant 0.5 scores) and every baseline
    comparisons = g["comparisons"]
    assert comparisons["metric"] == "roc_auc" and sorted(comparisons["baselines"]) == sorted(g["baselines"])
    champion = comparisons["champion"]
    assert champion["delta"] == pytest.approx(cand - 0.5) and champion["low"] < champion["delta"]
    assert champion["rows"] == g["eval_window"]["rows"]
    with_ci = decide(
        g["candidate"],
        g["baselines"],
        g["champion"],
        {"passed": True, "reasons": []},
        comparisons=comparisons,
    )
    tree = comparisons["baselines"]["gradient_boosted_tree"]
    assert with_ci.details["baselines"]["gradient_boosted_tree"]["beaten"] is (tree["low"] > -0.005)


def test_evaluate_candidate_rejects_a_one_class_window(train: pa.Table, tmp_path: Path) -> None:
    cash_only = train.filter(pc.equal(train["payment_type"], "No Charge")).filter(
        pc.invert(train.filter(pc.equal(train["payment_type"], "No Charge"))["big_tipper"])
    )
    with pytest.raises(ValueError, match="needs both classes"):
        evaluate_candidate(FnScorer(payment_fare_score), train, cash_only, champion=None, out_dir=tmp_path)
