"""TabularNet, ModelConfig, bundles, the device plan and the time split (synthetic training-set tables)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from ml_tasks.contract import MODEL_JSON, PREPROCESSING_JSON
from ml_tasks.models.network import BundleError, ModelConfig, TabularNet, load_bundle, save_bundle
from ml_tasks.models.preprocess import Inputs, Preprocessor, infer_inputs
from ml_tasks.training.distributed import plan_device
from ml_tasks.training.split import split_by_time
from ml_tasks.training.train import train_model

torch.set_num_threads(1)

PAYMENTS = np.array(["Cash", "Credit Card", "Mobile"])
COMPANIES = np.array(["Flash Cab", "Sun Taxi", "Taxi Affiliation Services", None], dtype=object)


def synthetic_frame(n: int, seed: int = 0) -> pa.Table:
    """A training-set-shaped table whose label depends on payment type and fare (learnable, noisy)."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    minutes = np.sort(rng.integers(0, 60 * 24 * 90, n))
    payment = PAYMENTS[rng.choice(3, n, p=[0.5, 0.4, 0.1])]
    fare = np.round(rng.gamma(2.0, 6.0, n) + 3.25, 2)
    miles = np.round(fare / 2.5 * rng.uniform(0.5, 1.5, n), 2)
    seconds = (miles * 180 + rng.integers(60, 600, n)).astype(np.int64)
    logit = np.where(payment == "Cash", -4.0, 1.0) - 0.08 * fare + rng.normal(0, 0.5, n)
    label = rng.uniform(size=n) < 1 / (1 + np.exp(-logit))
    fare_with_nulls = pa.array(fare, mask=rng.uniform(size=n) < 0.02)
    ts = [start + dt.timedelta(minutes=int(m)) for m in minutes]
    return pa.table(
        {
            "trip_key": [f"k{i:07d}" for i in range(n)],
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "trip_date": pa.array([t.date() for t in ts], pa.date32()),
            "pickup_community_area": pa.array(rng.integers(1, 78, n), pa.int64()),
            "dropoff_community_area": pa.array(rng.integers(1, 78, n), pa.int64()),
            "company": pa.array(COMPANIES[rng.integers(0, 4, n)], pa.string()),
            "payment_type": pa.array(payment, pa.string()),
            "fare": fare_with_nulls,
            "trip_miles": pa.array(miles),
            "trip_seconds": pa.array(seconds),
            "big_tipper": pa.array(label),
            "trip_start_hour": pa.array([t.hour for t in ts], pa.int8()),
            "trip_start_day_of_week": pa.array([t.isoweekday() for t in ts], pa.int8()),
            "trip_start_month": pa.array([t.month for t in ts], pa.int8()),
            "fare_per_mile": pa.array(
                np.where(miles > 0, fare / np.maximum(miles, 1e-9), np.nan), from_pandas=True
            ),
            "speed_mph": pa.array(miles / (seconds / 3600.0)),
        }
    )


@pytest.fixture(scope="module")
def frame() -> pa.Table:
    return synthetic_frame(3000)


@pytest.fixture(scope="module")
def preprocessor(frame: pa.Table) -> Preprocessor:
    return Preprocessor.fit(frame, infer_inputs(frame.schema), min_count=5)


def test_forward_shapes_and_probability_range(frame: pa.Table, preprocessor: Preprocessor) -> None:
    torch.manual_seed(0)
    model = TabularNet(ModelConfig(), preprocessor).eval()
    encoded = preprocessor.encode(frame.slice(0, 37))
    numeric, categorical = torch.from_numpy(encoded.numeric), torch.from_numpy(encoded.categorical)
    probs = model(numeric, categorical)
    logits = model.logits(numeric, categorical)
    assert probs.shape == (37,) and logits.shape == (37,)
    assert probs.dtype == torch.float32
    assert bool(((probs > 0) & (probs < 1)).all())
    # forward = sigmoid(logits + the calibration offset)
    model.init_output(0.3, -1.2)
    torch.testing.assert_close(
        model(numeric, categorical), torch.sigmoid(model.logits(numeric, categorical) - 1.2)
    )
    # embedding widths follow the rule; row 0 of each is the OOV bucket
    widths = [e.embedding_dim for e in model._embeddings()]
    assert widths == [ModelConfig().embedding_dim(n) for n in preprocessor.vocabulary_sizes()]
    assert ModelConfig().embedding_dim(5) == 4 and ModelConfig().embedding_dim(10_000) == 16


def test_nan_inputs_give_finite_probabilities_and_matter(preprocessor: Preprocessor) -> None:
    torch.manual_seed(0)
    model = TabularNet(ModelConfig(), preprocessor).eval()
    n_num, n_cat = len(preprocessor.stats), len(preprocessor.vocabularies)
    numeric = torch.tensor([[10.0] * n_num, [float("nan")] * n_num, [1e12] * n_num])
    categorical = torch.zeros((3, n_cat), dtype=torch.int64)
    probs = model(numeric, categorical)
    assert bool(torch.isfinite(probs).all())
    assert probs[0] != probs[1]  # the missing indicator is an input, not a silent 0
    assert probs.shape == (3,)


def test_construction_is_deterministic_given_the_seed(preprocessor: Preprocessor) -> None:
    def weights(seed: int) -> dict[str, torch.Tensor]:
        torch.manual_seed(seed)
        return TabularNet(ModelConfig(), preprocessor).state_dict()

    a, b, c = weights(1), weights(1), weights(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_model_config_validation_and_round_trip() -> None:
    config = ModelConfig(hidden=(32, 16), dropout=0.2, pos_weight="sqrt")
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="dropout"):
        ModelConfig(dropout=1.0)
    with pytest.raises(ValueError, match="pos_weight"):
        ModelConfig(pos_weight="often")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['hiden'\]"):
        ModelConfig.from_dict({"hiden": [8]})
    assert ModelConfig().pos_weight_value(positives=25, negatives=75) == pytest.approx(3.0)
    assert ModelConfig(pos_weight="sqrt").pos_weight_value(25, 75) == pytest.approx(3.0**0.5)
    assert ModelConfig(pos_weight="none").pos_weight_value(25, 75) == 1.0


def test_plan_device_given_cuda_availability() -> None:
    cpu = plan_device(None, cuda_available=False, bf16_supported=False)
    assert (cpu.device, cpu.amp_dtype, cpu.grad_scaler, cpu.pin_memory) == ("cpu", None, False, False)
    bf16 = plan_device("auto", cuda_available=True, bf16_supported=True, local_rank=1)
    assert (bf16.device, bf16.amp_dtype, bf16.grad_scaler, bf16.pin_memory) == (
        "cuda:1",
        torch.bfloat16,
        False,
        True,
    )
    fp16 = plan_device(None, cuda_available=True, bf16_supported=False)
    assert (fp16.device, fp16.amp_dtype, fp16.grad_scaler, fp16.pin_memory) == (
        "cuda:0",
        torch.float16,
        True,
        True,
    )
    assert plan_device("cpu", cuda_available=True, bf16_supported=True).device == "cpu"
    assert plan_device("cuda:3", cuda_available=True, bf16_supported=True).device == "cuda:3"
    with pytest.raises(ValueError, match="CUDA is not available"):
        plan_device("cuda", cuda_available=False, bf16_supported=False)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        plan_device("tpu", cuda_available=False, bf16_supported=False)


def test_split_by_time_is_ordered_disjoint_and_keeps_ties_together() -> None:
    ts = [dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(minutes=15 * (i // 4)) for i in range(100)]
    table = pa.table(
        {
            "trip_key": [f"k{99 - i:03d}" for i in range(100)],
            "event_timestamp": pa.array(ts, pa.timestamp("us", tz="UTC")),
        }
    ).take(np.random.default_rng(0).permutation(100))
    split = split_by_time(table, 0.1, 0.1)
    parts = [split.train, split.validation, split.test]
    assert sum(p.num_rows for p in parts) == 100
    # cut at 80 falls on a tie's start; cut at 90 falls inside the tie 88..91, which goes to test
    assert [p.num_rows for p in parts] == [80, 8, 12]
    for earlier, later in itertools.pairwise(parts):
        assert max(earlier["event_timestamp"].to_pylist()) < min(later["event_timestamp"].to_pylist())
    keys = split.train["trip_key"].to_pylist()
    stamps = split.train["event_timestamp"].to_pylist()
    assert list(zip(stamps, keys, strict=True)) == sorted(zip(stamps, keys, strict=True))
    # a cut inside a tie moves to the tie's start: 0.15 * 100 = 15 -> the tie 12..15 goes to the later part
    odd = split_by_time(table, 0.15, 0.15)
    assert odd.train.num_rows == 68 and odd.validation.num_rows == 16 and odd.test.num_rows == 16
    assert split.describe()["test"]["rows"] == split.test.num_rows


def test_split_by_time_errors() -> None:
    table = pa.table({"trip_key": ["a"], "event_timestamp": pa.array([0], pa.timestamp("us", tz="UTC"))})
    with pytest.raises(ValueError, match="fractions"):
        split_by_time(table, 0.5, 0.5)
    with pytest.raises(ValueError, match="would be empty"):
        split_by_time(table)
    with pytest.raises(ValueError, match="no column 'event_timestamp'"):
        split_by_time(pa.table({"trip_key": ["a"]}))


# 3 short epochs: a higher lr than the default, and no PLE bins (the smooth signal needs none)
SMALL = ModelConfig(
    hidden=(16,), max_epochs=3, patience=2, batch_size=64, min_count=5, numeric_bins=0, lr=3e-3
)


def test_training_is_deterministic_and_learns(frame: pa.Table) -> None:
    split = split_by_time(frame, 0.15, 0.15)
    first = train_model(split, SMALL, checkpoint_dir=None, device="cpu")
    second = train_model(split, SMALL, checkpoint_dir=None, device="cpu")
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["val_log_loss"] for h in first.history] == [h["val_log_loss"] for h in second.history]
    assert first.metrics["validation"]["roc_auc"] > 0.85  # the synthetic signal is strong
    assert first.metrics["test"]["roc_auc"] > 0.85
    assert 0.05 <= first.threshold <= 0.95
    positives = float(np.mean(split.train["big_tipper"].to_numpy()))
    assert first.pos_weight == pytest.approx((1 - positives) / positives)
    assert all(h["rows_per_second"] > 0 for h in first.history)
    other = train_model(split, SMALL.replace(seed=7), checkpoint_dir=None, device="cpu")
    assert not torch.equal(other.model.state_dict()["head.weight"], a["head.weight"])


def test_bundle_round_trip_gives_identical_probabilities(frame: pa.Table, tmp_path: Path) -> None:
    split = split_by_time(frame, 0.15, 0.15)
    result = train_model(split, SMALL.replace(max_epochs=1), checkpoint_dir=None, device="cpu")
    before = result.model.eval()
    encoded = result.preprocessor.encode(split.test)
    with torch.inference_mode():
        expected = before(torch.from_numpy(encoded.numeric), torch.from_numpy(encoded.categorical)).numpy()
    save_bundle(
        tmp_path, result.model, result.preprocessor, SMALL, result.bundle_metadata(feature_service="x")
    )
    bundle = load_bundle(tmp_path)
    probs = bundle.predict_proba(split.test)
    assert probs.dtype == np.float64 and probs.shape == (split.test.num_rows,)
    np.testing.assert_array_equal(probs, expected.astype(np.float64))
    # another batch size may take another matmul kernel: equal up to float32 rounding
    np.testing.assert_allclose(bundle.predict_proba(split.test, batch_size=7), probs, rtol=1e-6, atol=1e-7)
    assert bundle.threshold == result.threshold
    meta = json.loads((tmp_path / MODEL_JSON).read_text())
    assert meta["label"] == "big_tipper" and meta["feature_service"] == "x"
    assert meta["inputs"]["categorical"][0] == "payment_type"
    assert meta["preprocessing_sha256"] == result.preprocessor.sha256()
    assert "torch" in meta["library_versions"]
    assert meta["metrics"]["validation"]["roc_auc"] == result.metrics["validation"]["roc_auc"]


def test_load_bundle_refuses_incomplete_or_mismatched_bundles(
    frame: pa.Table, preprocessor: Preprocessor, tmp_path: Path
) -> None:
    model = TabularNet(SMALL, preprocessor)
    save_bundle(tmp_path, model, preprocessor, SMALL, {"threshold": 0.3})
    other = Preprocessor.fit(frame.slice(0, 500), preprocessor.inputs, min_count=5)
    (tmp_path / PREPROCESSING_JSON).write_text(other.to_json())
    with pytest.raises(BundleError, match="not the one the model was trained with"):
        load_bundle(tmp_path)
    (tmp_path / PREPROCESSING_JSON).unlink()
    with pytest.raises(BundleError, match=r"no preprocessing\.json"):
        load_bundle(tmp_path)
    with pytest.raises(BundleError, match="threshold"):
        save_bundle(tmp_path, model, preprocessor, SMALL, {"threshold": 1.5})


def test_piecewise_linear_encoding_values_nan_and_padding() -> None:
    train = pa.table({"fare": [0.0, 1.0, 2.0, 4.0], "trip_miles": [3.0, 3.0, 5.0, 5.0]})
    pre = Preprocessor.fit(
        train, Inputs((), ("fare", "trip_miles")), min_count=1, numeric_bins=3, min_rows_per_bin=1
    )
    assert pre.stats[0].edges == (0.0, 1.0, 2.0, 4.0) and pre.stats[1].edges == (3.0, 5.0)
    model = TabularNet(ModelConfig(numeric_bins=3), pre).eval()
    nan = float("nan")
    x = torch.tensor([[-1.0, 4.0], [0.5, 3.0], [3.0, 5.0], [10.0, nan], [nan, 100.0]])
    expected = torch.tensor(
        [
            [[0.0, 0.0, 0.0], [0.5, 0.0, 0.0]],  # below the first edge: clamped to 0
            [[0.5, 0.0, 0.0], [0.0, 0.0, 0.0]],
            [[1.0, 1.0, 0.5], [1.0, 0.0, 0.0]],  # trip_miles has one bin: bins 2 and 3 are padding (0)
            [[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]],  # above the last edge: clamped to 1; NaN -> all 0
            [[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]],
        ]
    )
    torch.testing.assert_close(model.piecewise_linear(x), expected)
    assert bool(torch.isfinite(model(x, torch.zeros((5, 0), dtype=torch.int64))).all())
    assert model.features(x, torch.zeros((5, 0), dtype=torch.int64)).shape == (5, 3 * 2 + 2 * 3)


def test_numeric_bins_zero_or_unfitted_edges_disable_the_encoding(preprocessor: Preprocessor) -> None:
    with_bins = TabularNet(ModelConfig(), preprocessor)
    assert with_bins.n_bins == preprocessor.max_bins() > 0 and "ple_lo" in with_bins.state_dict()
    off = TabularNet(ModelConfig(numeric_bins=0), preprocessor)
    assert off.n_bins == 0 and "ple_lo" not in off.state_dict()
    # a preprocessing fitted without bins (e.g. an older bundle) builds the model of before: no buffers
    plain = Preprocessor.from_dict(
        {**preprocessor.to_dict(), "numeric": [{**s, "edges": []} for s in preprocessor.to_dict()["numeric"]]}
    )
    assert TabularNet(ModelConfig(), plain).n_bins == 0
    with pytest.raises(ValueError, match="numeric_bins"):
        ModelConfig(numeric_bins=-1)


def test_numeric_bins_caps_the_fitted_edges(preprocessor: Preprocessor) -> None:
    assert preprocessor.max_bins() > 4
    model = TabularNet(ModelConfig(numeric_bins=4), preprocessor)
    assert model.n_bins == 4
    fare = preprocessor.stats[0].edges
    # an evenly spaced subset of the quantile edges, ends kept
    assert float(model.ple_lo[0, 0]) == pytest.approx(fare[0])
    top = float(model.ple_lo[0, 3]) + 1.0 / float(model.ple_inv_width[0, 3])
    assert top == pytest.approx(fare[-1], rel=1e-5)


def test_piecewise_linear_encoding_learns_a_step_shaped_effect() -> None:
    """A label that flips with the fare every 4 $ (like whole-dollar tip rounding): bins follow it."""
    rng = np.random.default_rng(1)
    n = 3000
    base = synthetic_frame(n, seed=1)
    fare = rng.uniform(0.0, 16.0, n)
    label = (np.floor(fare / 4.0) % 2 == 0) ^ (rng.uniform(size=n) < 0.1)
    table = base.set_column(base.schema.get_field_index("fare"), "fare", pa.array(fare)).set_column(
        base.schema.get_field_index("big_tipper"), "big_tipper", pa.array(label)
    )
    split = split_by_time(table, 0.2, 0.0)
    config = ModelConfig(hidden=(32,), max_epochs=6, patience=6, batch_size=128, min_count=5)
    auc = {}
    for bins in (0, 32):
        result = train_model(split, config.replace(numeric_bins=bins), checkpoint_dir=None, device="cpu")
        auc[bins] = result.metrics["validation"]["roc_auc"]
    assert auc[32] > 0.85  # ~0.9 is the noise ceiling
    assert auc[32] > auc[0] + 0.1


def test_ensemble_members_are_averaged_inside_the_model(frame: pa.Table, preprocessor: Preprocessor) -> None:
    torch.manual_seed(0)
    model = TabularNet(ModelConfig(ensemble=4), preprocessor).eval()
    model.init_output(0.3, -1.2)
    encoded = preprocessor.encode(frame.slice(0, 21))
    numeric, categorical = torch.from_numpy(encoded.numeric), torch.from_numpy(encoded.categorical)
    logits = model.logits(numeric, categorical)
    assert logits.shape == (21, 4)  # one logit per member: each member is trained on its own loss
    torch.testing.assert_close(model(numeric, categorical), torch.sigmoid(logits - 1.2).mean(dim=-1))
    # the members differ (random-sign adapters), share the MLP and own a head each
    assert float((logits[:, 0] - logits[:, 1]).abs().max()) > 1e-4
    assert model.adapter.shape[0] == 4 and set(model.adapter.detach().unique().tolist()) == {-1.0, 1.0}
    assert sum(1 for m in model.mlp if isinstance(m, torch.nn.Linear)) == len(ModelConfig().hidden)


def test_an_ensemble_trains_deterministically(frame: pa.Table) -> None:
    split = split_by_time(frame, 0.15, 0.15)
    config = SMALL.replace(ensemble=3)
    first = train_model(split, config, checkpoint_dir=None, device="cpu")
    second = train_model(split, config, checkpoint_dir=None, device="cpu")
    a, b = first.model.state_dict(), second.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and a["head.weight"].shape[0] == 3
    assert first.metrics["validation"]["roc_auc"] > 0.8


def test_only_the_trips_own_numeric_inputs_are_binned_by_default(frame: pa.Table, tmp_path: Path) -> None:
    """A ``<view>__<feature>`` aggregate gets the scaled views but no bins (the demo's ~40 of them made the
    first layer 4x wider); the model gathers the binned inputs, so no padding rows are computed."""
    rng = np.random.default_rng(3)
    wide = frame.append_column("area_stats__trips_7d", pa.array(rng.gamma(2.0, 50.0, frame.num_rows)))
    inputs = infer_inputs(wide.schema)
    trip = Preprocessor.fit(wide, inputs, min_count=5, bin_inputs="trip")
    every = Preprocessor.fit(wide, inputs, min_count=5, bin_inputs="all")
    view = inputs.numeric.index("area_stats__trips_7d")
    assert trip.stats[view].edges == () and len(every.stats[view].edges) > 2
    assert [s.edges for j, s in enumerate(trip.stats) if j != view] == [
        s.edges for j, s in enumerate(every.stats) if j != view
    ]
    narrow, full = TabularNet(ModelConfig(), trip), TabularNet(ModelConfig(), every)
    assert narrow.binned == [j for j in range(len(inputs.numeric)) if j != view]
    n_bins = narrow.n_bins
    first = [next(m for m in net.mlp if isinstance(m, torch.nn.Linear)).in_features for net in (full, narrow)]
    assert first[0] - first[1] == n_bins  # one input fewer binned
    encoded = trip.encode(wide.slice(0, 50))
    x = torch.from_numpy(encoded.numeric)
    torch.testing.assert_close(narrow.piecewise_linear(x), full.piecewise_linear(x)[:, narrow.binned])
    # an older bundle's tables kept a padding row per input without edges: they are rebuilt on load
    save_bundle(tmp_path, narrow, trip, ModelConfig(), {"threshold": 0.5})
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    padded = torch.zeros((len(inputs.numeric), n_bins))
    padded[narrow.binned] = state["ple_lo"]
    state["ple_lo"] = padded
    torch.save(state, tmp_path / "model.pt")
    torch.testing.assert_close(load_bundle(tmp_path).model.ple_lo, narrow.ple_lo)
    with pytest.raises(ValueError, match="bin_inputs"):
        ModelConfig(bin_inputs="some")  # type: ignore[arg-type]
