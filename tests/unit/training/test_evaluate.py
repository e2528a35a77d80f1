"""Evaluation, baselines and the model card on synthetic tables with known answers."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from ml_tasks.models import metrics as model_metrics
from ml_tasks.training import baselines, card, evaluate
from ml_tasks.training.frames import FRAME_SCHEMA
from ml_tasks.training.gate import decide

PAYMENTS = ("Cash", "Credit Card", "No Charge")
COMPANIES = tuple(f"company {i:02d}" for i in range(14))


def synthetic_table(rows: int, seed: int, start: dt.datetime | None = None) -> pa.Table:
    """A training-set-shaped table whose label depends on payment type (strongly) and fare (weakly)."""
    rng = np.random.default_rng(seed)
    start = start or dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    minutes = np.sort(rng.integers(0, 60 * 24 * 60, rows))
    ts = np.datetime64(start.replace(tzinfo=None), "us") + minutes.astype("timedelta64[m]")
    payment = rng.choice(PAYMENTS, rows, p=[0.6, 0.37, 0.03])
    company = [
        COMPANIES[i] if i < len(COMPANIES) else None for i in rng.integers(0, len(COMPANIES) + 1, rows)
    ]
    fare = np.round(rng.gamma(2.0, 6.0, rows) + 3.25, 2)
    miles = np.round(rng.gamma(1.5, 1.5, rows), 1)
    seconds = rng.integers(60, 3600, rows)
    logit = np.where(payment == "Credit Card", 0.8, -5.0) + 0.05 * (fare - 15)
    label = rng.random(rows) < 1 / (1 + np.exp(-logit))
    when = ts.astype("datetime64[us]")
    hours = (when.astype("datetime64[h]").astype(np.int64) % 24).astype(np.int8)
    data: dict[str, Any] = {
        "trip_key": [f"t{seed}-{i:06d}" for i in range(rows)],
        "event_timestamp": pa.array(when, pa.timestamp("us", tz="UTC")),
        "trip_date": pa.array(when.astype("datetime64[D]"), pa.date32()),
        "pickup_community_area": pa.array(rng.integers(1, 20, rows), pa.int64()),
        "dropoff_community_area": pa.array(rng.integers(1, 20, rows), pa.int64()),
        "company": pa.array(company, pa.string()),
        "payment_type": pa.array(payment.tolist(), pa.string()),
        "fare": fare,
        "trip_miles": miles,
        "trip_seconds": pa.array(seconds, pa.int64()),
        "big_tipper": label,
        "trip_start_hour": pa.array(hours, pa.int8()),
        "trip_start_day_of_week": pa.array(rng.integers(1, 8, rows), pa.int8()),
        "trip_start_month": pa.array(np.full(rows, 1), pa.int8()),
        "fare_per_mile": pa.array(np.where(miles > 0, fare / np.where(miles > 0, miles, 1), np.nan),
                                  pa.float64(), from_pandas=True),
        "speed_mph": pa.array(miles / (seconds / 3600.0), pa.float64()),
    }  # fmt: skip
    return pa.table(data, schema=FRAME_SCHEMA)


@pytest.fixture(scope="module")
def train() -> pa.Table:
    return synthetic_table(3000, seed=1)


@pytest.fixture(scope="module")
def evaluation() -> pa.Table:
    return synthetic_table(1500, seed=2, start=dt.datetime(2024, 3, 1, tzinfo=dt.UTC))


class FnScorer:
    """A scorer from a function of the table (test double for a model: the real ones are tested too)."""

    def __init__(self, fn: Any, threshold: float = 0.5) -> None:
        self.fn = fn
        self.threshold = threshold

    def predict_proba(self, table: pa.Table) -> npt.NDArray[np.float64]:
        return np.asarray(self.fn(table), dtype=np.float64)


def payment_fare_score(table: pa.Table) -> npt.NDArray[np.float64]:
    credit = pc.equal(table["payment_type"], "Credit Card").to_numpy(zero_copy_only=False)
    fare = table["fare"].to_numpy()
    return np.asarray(np.where(credit, 0.6, 0.01) + 0.001 * np.tanh(fare / 50), dtype=np.float64)


# ------------------------------------------------------------------------------------------------ metrics


def test_classification_metrics_known_answers() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.4, 0.35, 0.8])
    m = model_metrics.classification_metrics(y, p, 0.5)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["brier"] == pytest.approx((0.01 + 0.16 + 0.4225 + 0.04) / 4)
    assert m["log_loss"] == pytest.approx(log_loss(y, p))
    assert m["precision"] == pytest.approx(1.0) and m["recall"] == pytest.approx(0.5)
    assert m["positive_rate"] == 0.5 and m["predicted_positive_rate"] == 0.25 and m["rows"] == 4
    # threshold matters for accuracy only
    assert model_metrics.classification_metrics(y, p, 0.3)["accuracy"] == pytest.approx(0.75)
    assert model_metrics.classification_metrics(y, p, 0.05)["accuracy"] == pytest.approx(0.5)


def test_confident_wrong_score_has_a_finite_log_loss() -> None:
    m = model_metrics.classification_metrics(np.array([0, 1]), np.array([1.0, 1.0]), 0.5)
    # one row right, one confidently wrong at the clip (~34.5 nats): mean ~17.3, not infinity
    assert 15 < m["log_loss"] < 20


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1], [0.5], "2 labels but 1 scores"),
        ([], [], "no rows"),
        ([0, 1], [0.2, 1.2], "probabilities in"),
        ([0, 1], [0.2, np.nan], "NaN or infinite"),
        ([0, 2], [0.2, 0.3], "labels must be 0/1"),
        ([1, 1], [0.2, 0.3], "ROC-AUC needs both classes"),
    ],
)
def test_classification_metrics_rejects_bad_input(y: list[int], p: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        model_metrics.classification_metrics(np.array(y), np.array(p, dtype=float), 0.5)


def test_ece_zero_for_calibrated_bins_and_shift_for_shifted_scores() -> None:
    # bin 2 holds four rows scored 0.25 of which one is positive: exactly calibrated
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    p = np.array([0.25] * 4 + [0.75] * 4)
    assert model_metrics.calibration(y, p).ece == pytest.approx(0.0)
    shifted = model_metrics.calibration(y, p + 0.2)
    assert shifted.ece == pytest.approx(0.2)
    rows = {r["bin"]: r for r in shifted.table}
    assert rows[4]["count"] == 4 and rows[4]["mean_predicted"] == pytest.approx(0.45)
    assert rows[4]["observed_rate"] == pytest.approx(0.25)
    assert rows[0]["count"] == 0 and rows[0]["mean_predicted"] is None


def test_ece_of_random_calibrated_vs_shifted_predictor() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0.2, 0.8, 200_000)
    y = (rng.random(p.size) < p).astype(int)
    assert model_metrics.calibration(y, p).ece < 0.01
    assert model_metrics.calibration(y, p + 0.15).ece == pytest.approx(0.15, abs=0.01)


def test_calibration_puts_one_in_the_last_bin() -> None:
    result = model_metrics.calibration(np.array([0, 1]), np.array([0.0, 1.0]), bins=5)
    assert [r["count"] for r in result.table] == [1, 0, 0, 0, 1]
    assert result.table[-1]["upper"] == 1.0 and result.ece == 0.0
    with pytest.raises(ValueError, match="bins must be >= 1"):
        model_metrics.calibration(np.array([0, 1]), np.array([0.0, 1.0]), bins=0)


def test_reliability_plot_writes_a_deterministic_png(tmp_path: Path) -> None:
    table = model_metrics.calibration(np.array([0, 1, 1, 0]), np.array([0.1, 0.9, 0.6, 0.3])).table
    a = evaluate.reliability_plot(table, tmp_path / "a" / "r.png")
    b = evaluate.reliability_plot(table, tmp_path / "b.png")
    assert a.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert a.read_bytes() == b.read_bytes()
    assert not list(tmp_path.glob("**/.*.tmp"))


# ------------------------------------------------------------------------------------------------- slices


def test_top_k_labels_other_and_null() -> None:
    column = pa.array(["a"] * 5 + ["c"] * 3 + ["b"] * 3 + ["d"] + [None] * 2)
    values, order = evaluate.top_k_labels(column, top=2)
    # b and c tie on count: the value order decides (deterministic), so c goes to "other"
    assert order == ["a", "b", "other", "(null)"]
    assert values.tolist() == ["a"] * 5 + ["other"] * 3 + ["b"] * 3 + ["other"] + ["(null)"] * 2
    values, order = evaluate.top_k_labels(pa.array([3, 3, 8], pa.int64()), top=10)
    assert order == ["3", "8"] and values.tolist() == ["3", "3", "8"]


def test_hour_buckets() -> None:
    values, order = evaluate.hour_bucket_labels(pa.array([0, 5, 6, 11, 12, 17, 18, 23, None], pa.int8()))
    assert values.tolist() == ["night", "night", "morning", "morning", "afternoon", "afternoon",
                               "evening", "evening", "(null)"]  # fmt: skip
    assert order == ["night", "morning", "afternoon", "evening", "(null)"]
    assert evaluate.hour_bucket_labels(pa.array([19], pa.int8()))[1] == ["evening"]
    with pytest.raises(ValueError, match="0-23"):
        evaluate.hour_bucket_labels(pa.array([24], pa.int8()))


def test_slice_metrics_values(evaluation: pa.Table) -> None:
    y = baselines.labels(evaluation)
    p = payment_fare_score(evaluation)
    slices = evaluate.slice_metrics(evaluation, y, p, 0.5)
    assert set(slices) == {"payment_type", "company", "hour_bucket", "pickup_area"}
    by_payment = {r["slice"]: r for r in slices["payment_type"]}
    cash = pc.equal(evaluation["payment_type"], "Cash").to_numpy(zero_copy_only=False)
    assert by_payment["Cash"]["rows"] == int(cash.sum())
    assert by_payment["Cash"]["positive_rate"] == pytest.approx(y[cash].mean())
    assert by_payment["Cash"]["accuracy"] == pytest.approx(np.mean(y[cash] == 0))
    credit = ~cash & pc.equal(evaluation["payment_type"], "Credit Card").to_numpy(zero_copy_only=False)
    assert by_payment["Credit Card"]["roc_auc"] == pytest.approx(roc_auc_score(y[credit], p[credit]))
    # 14 companies + nulls: top 10, then "other", then "(null)"; every row in exactly one slice
    companies = [r["slice"] for r in slices["company"]]
    assert len(companies) == 12 and companies[-2:] == ["other", "(null)"]
    for name, rows in slices.items():
        assert sum(r["rows"] for r in rows) == evaluation.num_rows, name
    assert sum(r["rows"] for r in slices["hour_bucket"]) == evaluation.num_rows


def test_slice_with_one_class_has_no_auc() -> None:
    table = synthetic_table(50, seed=3)
    y = np.zeros(50, dtype=np.int8)
    y[:3] = 1
    table = table.set_column(table.schema.get_field_index("payment_type"), "payment_type",
                             pa.array(["Credit Card"] * 10 + ["Cash"] * 40))  # fmt: skip
    rows = {r["slice"]: r for r in evaluate.slice_metrics(table, y, np.full(50, 0.3), 0.5)["payment_type"]}
    assert rows["Cash"]["roc_auc"] is None and rows["Credit Card"]["roc_auc"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="no slice column"):
        evaluate.slice_metrics(table.drop_columns(["company"]), y, np.full(50, 0.3), 0.5)
    with pytest.raises(ValueError, match="50 rows but there are 3 scores"):
        evaluate.slice_metrics(table, y[:3], np.full(3, 0.3), 0.5)


# -------------------------------------------------------------------------------------- behavioural tests


def _by_name(results: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in results}


def test_perturbations_keep_the_request_features(evaluation: pa.Table) -> None:
    shifted = evaluate.shift_start_within_hour(evaluation, 7)
    before, after = evaluation["event_timestamp"], shifted["event_timestamp"]
    assert pc.all(pc.equal(pc.hour(before), pc.hour(after))).as_py()
    assert pc.all(pc.equal(pc.day(before), pc.day(after))).as_py()
    assert not pc.any(pc.equal(before, after)).as_py()
    moved = pc.add(evaluation["fare"], 0.01)
    plus = evaluate.add_to_fare(evaluation)
    assert np.allclose(plus["fare"].to_numpy(), moved.to_numpy())
    miles = evaluation["trip_miles"].to_numpy()
    fpm = plus["fare_per_mile"].to_numpy(zero_copy_only=False)
    positive = miles > 0
    assert np.allclose(fpm[positive], moved.to_numpy()[positive] / miles[positive])
    assert plus.schema == evaluation.schema


def test_behavioural_tests_pass_for_a_sensible_scorer(evaluation: pa.Table) -> None:
    results = _by_name(evaluate.behavioural_tests(FnScorer(payment_fare_score), evaluation))
    assert set(results) == {"start_minute_shift", "fare_plus_one_cent", "cash_to_credit_card",
                            "credit_card_to_cash"}  # fmt: skip
    assert all(r["passed"] and not r["skipped"] for r in results.values())
    assert results["cash_to_credit_card"]["measured"] == pytest.approx(0.59, abs=1e-3)
    assert results["start_minute_shift"]["measured"] == 1.0
    for r in results.values():
        assert {"name", "kind", "passed", "measured", "bound", "rows", "why"} <= set(r)


def test_directional_test_catches_a_scorer_that_ignores_payment_type(evaluation: pa.Table) -> None:
    ignores = FnScorer(lambda t: np.clip(t["fare"].to_numpy() / 100, 0, 1))
    results = _by_name(evaluate.behavioural_tests(ignores, evaluation))
    assert results["cash_to_credit_card"]["passed"] is False
    assert results["cash_to_credit_card"]["measured"] == pytest.approx(0.0)
    assert results["credit_card_to_cash"]["passed"] is False
    assert results["start_minute_shift"]["passed"] is True


def test_invariance_test_catches_a_scorer_noisy_to_the_minute(evaluation: pa.Table) -> None:
    def minute_noise(table: pa.Table) -> npt.NDArray[np.float64]:
        minute = pc.minute(table["event_timestamp"]).to_numpy().astype(float)
        return np.asarray(payment_fare_score(table) * 0.9 + minute / 6000, dtype=np.float64)

    results = _by_name(evaluate.behavioural_tests(FnScorer(minute_noise), evaluation))
    assert results["start_minute_shift"]["passed"] is False
    assert results["start_minute_shift"]["measured"] < 0.01
    assert results["start_minute_shift"]["max_abs_delta"] == pytest.approx(53 / 6000)


def test_invariance_test_catches_a_fare_step(evaluation: pa.Table) -> None:
    # a score that jumps at every whole dollar: a cent moves the fares just below one, nothing else
    def step(table: pa.Table) -> npt.NDArray[np.float64]:
        return np.asarray(0.1 + 0.5 * (np.floor(table["fare"].to_numpy()) % 2), dtype=np.float64)

    table = evaluation.set_column(evaluation.schema.get_field_index("fare"), "fare",
                                  pa.array(np.full(evaluation.num_rows, 10.995)))  # fmt: skip
    results = _by_name(evaluate.behavioural_tests(FnScorer(step), table))
    assert results["fare_plus_one_cent"]["passed"] is False
    assert results["fare_plus_one_cent"]["measured"] == 0.0
    mid_dollar = table.set_column(
        table.schema.get_field_index("fare"), "fare", pa.array(np.full(table.num_rows, 10.5))
    )
    assert (
        _by_name(evaluate.behavioural_tests(FnScorer(step), mid_dollar))["fare_plus_one_cent"]["measured"]
        == 1.0
    )


def test_behavioural_tests_skip_what_cannot_be_perturbed(evaluation: pa.Table) -> None:
    no_cash = evaluation.filter(pc.not_equal(evaluation["payment_type"], "Cash"))
    results = _by_name(evaluate.behavioural_tests(FnScorer(payment_fare_score), no_cash))
    assert results["cash_to_credit_card"]["skipped"] is True and results["cash_to_credit_card"]["rows"] == 0
    assert results["credit_card_to_cash"]["skipped"] is False


def test_behavioural_tests_reject_a_misaligned_scorer(evaluation: pa.Table) -> None:
    with pytest.raises(ValueError, match="shape"):
        evaluate.behavioural_tests(FnScorer(lambda t: np.zeros(3)), evaluation)


# ------------------------------------------------------------------------------------ single-feature AUC


def test_single_feature_auc_known_answers() -> None:
    train = synthetic_table(400, seed=4)
    ev = synthetic_table(400, seed=5)
    y = baselines.labels(ev)
    # a numeric column equal to the label, one equal to its negation, one constant
    ev = ev.set_column(ev.schema.get_field_index("fare"), "fare", pa.array(y.astype(float)))
    ev = ev.set_column(ev.schema.get_field_index("trip_miles"), "trip_miles", pa.array(-y.astype(float)))
    ev = ev.set_column(
        ev.schema.get_field_index("trip_seconds"), "trip_seconds", pa.array(np.ones(400, np.int64))
    )
    aucs = evaluate.single_feature_auc(
        train, ev, inputs=(["payment_type"], ["fare", "trip_miles", "trip_seconds"])
    )
    assert aucs["fare"] == 1.0 and aucs["trip_miles"] == 1.0 and aucs["trip_seconds"] == 0.5
    # categorical: the eval score is the TRAIN rate of the category
    rates = baselines.payment_type_rule(train).rates
    expected = roc_auc_score(y, [rates[v] for v in ev["payment_type"].to_pylist()])
    assert aucs["payment_type"] == pytest.approx(max(expected, 1 - expected))
    assert list(aucs) == ["fare", "trip_miles", "payment_type", "trip_seconds"]


def test_single_feature_auc_handles_nulls_and_unseen_categories() -> None:
    train = pa.table(
        {"c": ["x", "x", "y", None], "n": [1.0, None, 3.0, 4.0], "big_tipper": [True, False, False, True]}
    )
    ev = pa.table(
        {"c": ["x", "z", None, "y"], "n": [None, 2.0, 5.0, 0.5], "big_tipper": [True, False, True, False]}
    )
    aucs = evaluate.single_feature_auc(train, ev, inputs=(["c"], ["n"]))
    # c scores: x -> 0.5, z (unseen) -> prevalence 0.5, null -> 1.0, y -> 0.0
    assert aucs["c"] == pytest.approx(roc_auc_score([1, 0, 1, 0], [0.5, 0.5, 1.0, 0.0]))
    # n: the null takes the train median (3.0)
    assert aucs["n"] == pytest.approx(roc_auc_score([1, 0, 1, 0], [3.0, 2.0, 5.0, 0.5]))


def test_leakage_warnings() -> None:
    warnings = evaluate.leakage_warnings({"payment_type": 0.93, "fare": 0.55, "x": 0.9})
    assert [w["feature"] for w in warnings] == ["payment_type", "x"]
    assert "payment_type alone reaches ROC-AUC 0.930" in warnings[0]["message"]
    assert evaluate.leakage_warnings({"payment_type": 0.93}, threshold=0.95) == []
    with pytest.raises(ValueError, match="leakage threshold"):
        evaluate.leakage_warnings({}, threshold=0.2)


# ---------------------------------------------------------------------------------------------- baselines


def test_majority_and_payment_rule(train: pa.Table) -> None:
    y = baselines.labels(train)
    majority = baselines.majority_class(train)
    assert np.all(majority.predict_proba(train[:5]) == pytest.approx(y.mean()))
    rule = baselines.payment_type_rule(train)
    cash = pc.equal(train["payment_type"], "Cash").to_numpy(zero_copy_only=False)
    assert rule.rates["Cash"] == pytest.approx(y[cash].mean())
    probe = pa.table({"payment_type": pa.array(["Cash", "Bitcoin", None, "Credit Card"])})
    scores = rule.predict_proba(probe)
    assert scores[0] == pytest.approx(rule.rates["Cash"]) and scores[3] == pytest.approx(
        rule.rates["Credit Card"]
    )
    assert scores[1] == pytest.approx(y.mean()) and scores[2] == pytest.approx(y.mean())
    assert majority.threshold == rule.threshold == 0.5
    with pytest.raises(ValueError, match="no column 'payment_type'"):
        rule.predict_proba(pa.table({"fare": [1.0]}))


def test_labels_errors() -> None:
    with pytest.raises(ValueError, match="no label column"):
        baselines.labels(pa.table({"x": [1]}))
    with pytest.raises(ValueError, match="1 null"):
        baselines.labels(pa.table({"big_tipper": [True, None]}))
    with pytest.raises(ValueError, match="boolean or 0/1"):
        baselines.labels(pa.table({"big_tipper": [0, 3]}))


def test_gradient_boosted_tree_learns_and_is_deterministic(train: pa.Table, evaluation: pa.Table) -> None:
    a = baselines.gradient_boosted_tree(train, max_iter=40, seed=3, n_threads=1)
    b = baselines.gradient_boosted_tree(train, max_iter=40, seed=3, n_threads=1)
    pa_, pb = a.predict_proba(evaluation), b.predict_proba(evaluation)
    assert np.array_equal(pa_, pb)
    y = baselines.labels(evaluation)
    assert roc_auc_score(y, pa_) > 0.85
    assert a.info["validation"] == "newest" and 1 <= a.info["n_iter"] <= 40
    assert a.categorical[0] == "payment_type" and "fare" in a.numeric
    # unseen categories and nulls at prediction time are "missing", not an error
    odd = evaluation.slice(0, 3).set_column(
        evaluation.schema.get_field_index("company"), "company", pa.array(["nope", None, "company 01"])
    )
    assert np.isfinite(a.predict_proba(odd)).all()
    with pytest.raises(ValueError, match="lacks model input column"):
        a.predict_proba(evaluation.drop_columns(["fare"]))
    with pytest.raises(ValueError, match="validation_fraction"):
        baselines.gradient_boosted_tree(train, validation_fraction=0.7)


# -------------------------------------------------------------------------------------- the whole report


@pytest.fixture(scope="module")
def report(train: pa.Table, evaluation: pa.Table, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("evaluation")
    meta = {"training_set_uri": "file:///ts/part-00000.parquet", "training_set_sha256": "ab" * 32, "seed": 7}
    champion = FnScorer(lambda t: np.full(t.num_rows, 0.3))
    result = evaluate.evaluate_candidate(
        FnScorer(payment_fare_score), train, evaluation, champion=champion, out_dir=out, model_meta=meta,
        gbt_max_iter=30, gbt_threads=1,
    )  # fmt: skip
    return result | {"_out": out, "_meta": meta}


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


def test_evaluate_candidate_rejects_a_one_class_window(train: pa.Table, tmp_path: Path) -> None:
    cash_only = train.filter(pc.equal(train["payment_type"], "No Charge")).filter(
        pc.invert(train.filter(pc.equal(train["payment_type"], "No Charge"))["big_tipper"])
    )
    with pytest.raises(ValueError, match="needs both classes"):
        evaluate.evaluate_candidate(
            FnScorer(payment_fare_score), train, cash_only, champion=None, out_dir=tmp_path
        )


def test_model_card_names_the_champion_version(report: dict[str, Any]) -> None:
    meta = {"champion": {"name": "taxi_tips", "version": "3", "run_id": "abc"}, "eval_set": "file:///e.parquet",
            "eval_set_sha256": "cd" * 32}  # fmt: skip
    text = card.model_card(report, meta)
    assert "Champion compared on the same rows: taxi_tips version 3, run abc" in text
    assert "`file:///e.parquet`" in text and "cd" * 32 in text
    first = card.model_card({**report, "champion": None}, {})
    assert "none: the first model is compared with the baselines only" in first
    assert "| champion |" not in first
