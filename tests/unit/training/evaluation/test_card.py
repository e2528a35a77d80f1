"""The model card: deterministic, the numbers of the report, warnings near the top."""

from __future__ import annotations

from typing import Any

from ml_tasks.training.evaluation import card


def test_model_card_is_deterministic_and_reports_the_numbers(report: dict[str, Any]) -> None:
    meta = report["_meta"]
    text = card.model_card(report, meta)
    assert text == card.model_card(report, meta)
    assert text == (report["_out"] / "model_card.md").read_text()
    assert "**LEAKAGE WARNING**" in text.split("## Model")[0]
    assert f"{report['candidate']['metrics']['roc_auc']:.4f}" in text
    assert f"{report['baselines']['gradient_boosted_tree']['metrics']['roc_auc']:.4f}" in text
    assert "file:///ts/part-00000.parquet" in text and "ab" * 32 in text
    assert "![reliability diagram](reliability.png)" in text
    for test in report["behavioural_tests"]:
        assert f"| {test['name']} |" in text
    assert "| start_minute_shift | invariance | PASS | 1.0000 | 1.0e-06 |" in text
    assert "## Limitations" in text and "## Intended use" in text


def test_model_card_without_leakage_has_no_warning(report: dict[str, Any]) -> None:
    quiet = {**report, "leakage_warnings": []}
    assert "LEAKAGE WARNING" not in card.model_card(quiet, {}).split("## Single-feature")[0]


def test_model_card_names_the_champion_version(report: dict[str, Any]) -> None:
    meta = {"champion": {"name": "taxi_tips", "version": "3", "run_id": "abc"}, "eval_set": "file:///e.parquet",
            "eval_set_sha256": "cd" * 32}  # fmt: skip
    text = card.model_card(report, meta)
    assert "Champion compared on the same rows: taxi_tips version 3, run abc" in text
    assert "`file:///e.parquet`" in text and "cd" * 32 in text
    first = card.model_card({**report, "champion": None}, {})
    assert "none: the first model is compared with the baselines only" in first
    assert "| champion |" not in first
