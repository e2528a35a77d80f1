"""The training steps as the CLI runs them: train, evaluate, export-onnx, check-onnx (register and
promote: :mod:`ml_tasks.training.release`).

Each takes explicit inputs (URIs, a candidate bundle, a :class:`RunKey`) and returns the step's JSON
summary; the bundle layout and the steps' contract are in docs/training.md.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from ml_tasks.contract import EVALUATION_JSON, EXPORT_JSON, ONNX_FILE, PART_FILE
from ml_tasks.models.tracking import RunKey
from ml_tasks.settings import Settings
from ml_tasks.storage import write_json
from ml_tasks.training.inputs import (
    TrainingStepError,
    candidate_dir,
    eval_rows,
    flat_metrics,
    load_candidate,
    local_path,
    read_training_set,
    training_tags,
)
from ml_tasks.writers import pause_point

log = logging.getLogger(__name__)

FAULTS = ("corrupt-onnx",)


# -- train ----------------------------------------------------------------------------------------------
def _set_threads(settings: Settings) -> None:
    import os

    import torch

    threads = settings.train_threads or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    log.info("torch CPU threads: %d", threads)


def train(
    settings: Settings,
    training_set: str,
    key: RunKey,
    *,
    trials: int | None = None,
    max_epochs: int | None = None,
    learning_rate: float | None = None,
) -> dict[str, Any]:
    """Hyperparameter trials on the time-based split; the best on validation becomes the candidate bundle."""
    import mlflow

    from ml_tasks.models import tracking
    from ml_tasks.models.network import ModelConfig, save_bundle
    from ml_tasks.training.search import Report, search
    from ml_tasks.training.split import split_by_time
    from ml_tasks.training.train import train_model
    from ml_tasks.training.worker import TrialResult, torchrun_trial

    started = time.perf_counter()
    table, manifest, digest = read_training_set(training_set)
    if table.num_rows == 0:
        raise TrainingStepError(f"training set {training_set} has no rows: nothing to train on")
    # no in-training test split: the evaluate step tests on a LATER window; 90% trains, 10% validates
    split = split_by_time(table, val_fraction=0.1, test_fraction=0.0)
    pinned: dict[str, Any] = {}
    if max_epochs is not None:
        pinned["max_epochs"] = max_epochs
    if learning_rate is not None:
        pinned["lr"] = learning_rate
    budget = trials or settings.train_trials
    out = candidate_dir(settings, key)
    tags = training_tags(training_set, manifest, digest)
    device = None if settings.train_device == "auto" else settings.train_device
    _set_threads(settings)
    with tracking.task_run(
        settings, key, tags=tags, run_name=f"train {key.dag_run_id}", experiment=settings.mlflow_experiment
    ) as run:
        run_id = run.info.run_id
        mlflow.log_params(
            {"training_set": training_set, "training_set_sha256": digest, "trials": budget,
             "rows_train": split.train.num_rows, "rows_val": split.validation.num_rows,
             "rows_test": split.test.num_rows, "seed": settings.train_seed,
             "search_seconds": settings.train_search_seconds, **pinned}
        )  # fmt: skip
        checkpoints = out.parent / f".checkpoints-{out.name}"

        def objective(number: int, config: ModelConfig, report: Report) -> tuple[float, TrialResult]:
            with tracking.child_run(run_id, f"trial {number}", settings=settings):
                mlflow.log_params(config.to_dict())

                def log_epoch(metrics: dict[str, float], epoch: int) -> None:
                    mlflow.log_metrics(metrics, step=epoch)
                    if metrics.get("val_roc_auc") is not None:
                        try:
                            report(metrics["val_roc_auc"], epoch)
                        except Exception:
                            mlflow.set_tag("flywheel.trial.pruned", "true")
                            raise

                if settings.train_processes > 1:
                    trial = torchrun_trial(
                        settings, local_path(training_set) / PART_FILE, config,
                        checkpoints / f"trial-{number}-bundle", checkpoints / f"trial-{number}", device,
                    )  # fmt: skip
                else:
                    result = train_model(
                        split, config, checkpoint_dir=checkpoints / f"trial-{number}", device=device,
                        log_metrics=log_epoch,
                    )  # fmt: skip
                    trial = TrialResult(
                        None, result.metrics, result.best_epoch, result.threshold,
                        [h["rows_per_second"] for h in result.history], result.device, result.world_size,
                        result,
                    )  # fmt: skip
                mlflow.log_metrics(flat_metrics("val_", trial.metrics["validation"]))
                mlflow.log_metrics(flat_metrics("test_", trial.metrics.get("test", {})))
            # a validation split with one class has no AUC: such a trial ranks last
            score = float(trial.metrics["validation"].get(settings.promotion_metric, float("-inf")))
            log.info("trial %d: validation %s %.4f (%s)", number, settings.promotion_metric, score, config)
            return score, trial

        searched = search(
            objective, trials=budget, seed=settings.train_seed, seconds=settings.train_search_seconds,
            pinned=pinned,
        )  # fmt: skip
        results = [(t.score, t.number, t.config, t.result) for t in searched if t.score is not None]
        pruned = [t.number for t in searched if t.pruned]
        _, best_number, best_config, best = max(results, key=lambda r: (r[0], -r[1]))
        speeds = [v for v in best.rows_per_second if v and v != float("inf")]
        rows_per_second = sum(speeds) / len(speeds) if speeds else None
        extra = dict(
            model_name=settings.model_name,
            mlflow_run_id=run_id,
            training_set_uri=training_set,
            training_set_sha256=digest,
            feature_service=manifest.params.get("feature_service"),
            train_window=manifest.params.get("interval"),
            best_trial=best_number,
            trials=len(searched),
            train_rows_per_second=rows_per_second,
            dag={"dag_id": key.dag_id, "dag_run_id": key.dag_run_id},
        )
        if best.result is not None:
            metadata = best.result.bundle_metadata(**extra)
            model, preprocessor = best.result.model, best.result.preprocessor
        else:
            assert best.bundle is not None
            metadata = {**best.bundle.metadata, **extra}
            model, preprocessor = best.bundle.model, best.bundle.preprocessor
        save_bundle(out, model, preprocessor, best_config, metadata)
        # the monitoring reference travels with the model: a seeded sample of the training rows (inputs,
        # label, the model's scores) and per-column statistics over every training row
        from ml_tasks.models.reference import build_reference

        reference = build_reference(out, table, settings)
        mlflow.log_params({f"best_{k}": v for k, v in best_config.to_dict().items()})
        mlflow.log_metrics(flat_metrics("val_", best.metrics["validation"]))
        mlflow.log_metrics(flat_metrics("test_", best.metrics.get("test", {})))
        if rows_per_second:
            mlflow.log_metric("train_rows_per_second", rows_per_second)
        pause_point("bundle-saved")
        mlflow.log_artifacts(str(out), artifact_path="bundle")
    return {
        "step": "train",
        "bundle": str(out),
        "run_id": run_id,
        "training_set": training_set,
        "training_set_sha256": digest,
        "best_trial": best_number,
        "trials": [{"trial": n, settings.promotion_metric: round(s, 6)} for s, n, _, _ in results],
        "pruned_trials": pruned,
        "validation": best.metrics["validation"],
        "test": best.metrics.get("test"),
        "best_epoch": best.best_epoch,
        "device": best.device,
        "processes": best.world_size,
        "threshold": best.threshold,
        "rows_per_second": rows_per_second,
        "reference": reference,
        "seconds": round(time.perf_counter() - started, 3),
    }


# -- evaluate -------------------------------------------------------------------------------------------
def evaluate(
    settings: Settings, bundle: str, training_set: str, eval_set: str, key: RunKey, *, champion_alias: str
) -> dict[str, Any]:
    """Candidate, champion (same rows) and baselines on the later eval window; report + model card."""
    import mlflow

    from ml_tasks.models import loading, tracking
    from ml_tasks.training.evaluation.report import evaluate_candidate

    started = time.perf_counter()
    candidate = load_candidate(bundle)
    train_table, _, _ = read_training_set(training_set)
    eval_table, eval_manifest, eval_digest = read_training_set(eval_set)
    if eval_table.num_rows == 0:
        raise TrainingStepError(f"eval set {eval_set} has no rows: the gate needs an evaluation window")
    champion, champion_info = loading.load_champion_scorer(settings, settings.model_name, champion_alias)
    if champion is None:
        log.info("no %s@%s yet: the candidate is compared with the baselines only", settings.model_name,
                 champion_alias)  # fmt: skip
    parent = str(candidate.metadata["mlflow_run_id"])
    tags = training_tags(eval_set, eval_manifest, eval_digest)
    with tracking.task_run(
        settings, key, parent_run_id=parent, tags=tags, experiment=settings.mlflow_experiment
    ):
        report = evaluate_candidate(
            candidate,
            train_table,
            eval_table,
            champion=champion,
            out_dir=candidate.path,
            model_meta={**candidate.metadata, "champion": champion_info, "eval_set": eval_set,
                        "eval_set_sha256": eval_digest},
            seed=settings.train_seed,
        )  # fmt: skip
        report["champion_version"] = champion_info
        report["eval_set"] = {"uri": eval_set, "sha256": eval_digest}
        write_json(candidate.path / EVALUATION_JSON, report)
        gate = report["gate_inputs"]
        mlflow.log_metrics(flat_metrics("eval_", gate["candidate"]))
        for name, metrics in gate["baselines"].items():
            mlflow.log_metrics(flat_metrics(f"baseline_{name}_", metrics))
        if gate.get("champion"):
            mlflow.log_metrics(flat_metrics("champion_", gate["champion"]))
        for name in (EVALUATION_JSON, "model_card.md", "reliability.png"):
            if (candidate.path / name).is_file():
                mlflow.log_artifact(str(candidate.path / name))
        # the model's own run carries the headline numbers too (the registry and the UI look there)
        mlflow.MlflowClient().log_metric(parent, f"eval_{settings.promotion_metric}",
                                         float(gate["candidate"][settings.promotion_metric]))  # fmt: skip
    metric = settings.promotion_metric
    return {
        "step": "evaluate",
        "bundle": bundle,
        "eval_set": eval_set,
        "rows": eval_table.num_rows,
        "candidate": gate["candidate"],
        "champion": gate.get("champion"),
        "champion_version": champion_info,
        "baselines": {k: v.get(metric) for k, v in gate["baselines"].items()},
        "comparisons": gate.get("comparisons"),
        "leakage_warnings": report.get("leakage_warnings", []),
        "behavioural_failed": [t["name"] for t in report.get("behavioural_tests", []) if not t["passed"]],
        "seconds": round(time.perf_counter() - started, 3),
    }


# -- ONNX -----------------------------------------------------------------------------------------------
def export_onnx(
    settings: Settings, bundle: str, eval_set: str, key: RunKey, *, inject_fault: str | None = None
) -> dict[str, Any]:
    """Export the candidate to ONNX (dynamic batch, pinned opset); the file's hash goes into onnx.json."""
    import mlflow

    from ml_tasks.models import tracking
    from ml_tasks.training import onnx_export

    if inject_fault is not None:
        if inject_fault not in FAULTS:
            raise TrainingStepError(f"--inject-fault {inject_fault!r} is not one of {list(FAULTS)}")
        if not settings.allow_fault_injection:
            raise TrainingStepError(
                f"--inject-fault {inject_fault} refused: set FLYWHEEL_ALLOW_FAULT_INJECTION=true (tests only)"
            )
    candidate = load_candidate(bundle)
    rows = eval_rows(eval_set, max_rows=1_000)
    parent = str(candidate.metadata["mlflow_run_id"])
    with tracking.task_run(settings, key, parent_run_id=parent, experiment=settings.mlflow_experiment):
        result = onnx_export.export_onnx(candidate.path, sample=rows)
        if inject_fault == "corrupt-onnx":
            onnx_export.corrupt_onnx(candidate.path / ONNX_FILE)
            log.warning("FAULT INJECTED: %s corrupted after export", candidate.path / ONNX_FILE)
            mlflow.set_tag("flywheel.fault_injected", inject_fault)
        mlflow.log_metrics(flat_metrics("onnx_", {k: v for k, v in result.items() if k != "opset"}))
        mlflow.log_param("onnx_opset", result.get("opset"))
    return {"step": "export-onnx", "bundle": bundle, "fault_injected": inject_fault, **result}


def check_onnx(settings: Settings, bundle: str, eval_set: str, key: RunKey) -> dict[str, Any]:
    """Hash, load, signature, parity with torch on real eval rows, latency: recorded for the gate."""
    import mlflow

    from ml_tasks.models import tracking
    from ml_tasks.training import onnx_export

    candidate = load_candidate(bundle)
    exported = candidate.path / EXPORT_JSON
    if not exported.is_file():
        raise TrainingStepError(f"bundle {bundle}: no {exported.name}: run export-onnx first")
    expected = json.loads(exported.read_text())["onnx_sha256"]
    rows = eval_rows(eval_set)
    parent = str(candidate.metadata["mlflow_run_id"])
    with tracking.task_run(settings, key, parent_run_id=parent, experiment=settings.mlflow_experiment):
        result = onnx_export.check_onnx(
            candidate.path, rows, expected_sha256=expected, tolerance=settings.onnx_tolerance
        )
        mlflow.log_metrics(flat_metrics("onnx_", {k: v for k, v in result.items() if k not in ("passed",)}))
        mlflow.set_tag("flywheel.onnx_check", "passed" if result["passed"] else "failed")
        if not result["passed"]:
            log.warning("ONNX check FAILED: %s", "; ".join(result["reasons"]))
    return {"step": "check-onnx", "bundle": bundle, **result}
