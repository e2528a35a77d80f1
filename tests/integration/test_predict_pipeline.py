"""The scoring pipeline's failures on a real data root: an error in the prepare thread, the write thread or
the scoring thread fails the step with that error and changes no partition (nothing half-written, no
staging or lock left behind, no thread left running)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ml_tasks.intervals import Interval
from ml_tasks.settings import Settings
from tests.integration._pipeline import MODEL, PipelineRoot, day

pytestmark = [pytest.mark.timeout(900)]

#: two days; the first is scored once beforehand so a failed re-run must leave its bytes alone
INTERVAL = Interval(day(5), day(7))


@pytest.fixture(scope="module")
def root(pipeline_root: PipelineRoot, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineRoot]:
    mp = pytest.MonkeyPatch()
    mp.delenv("MLFLOW_TRACKING_URI", raising=False)
    mp.setenv("FLYWHEEL_CODE_VERSION", "test")
    yield pipeline_root.copy_to(tmp_path_factory.mktemp("predict_pipeline") / "data")
    mp.undo()


def _files(root: PipelineRoot) -> dict[str, bytes]:
    base = root.data_root / "predictions" / MODEL
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def _fail_on_second_call(target: Callable[..., Any], error: Exception) -> Callable[..., Any]:
    calls = []

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 2:
            raise error
        return target(*args, **kwargs)

    return failing


def test_a_failure_in_any_stage_changes_no_partition(
    root: PipelineRoot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ml_tasks.models.scorer import OnnxScorer
    from ml_tasks.prediction import batches, commit
    from ml_tasks.prediction.commit import predict_interval

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    settings = Settings(data_root=str(root.data_root), predict_batch_rows=500)  # several batches a day
    predict_interval(settings, Interval(day(5), day(6)), f"{MODEL}@champion")
    before = _files(root)
    assert [k for k in before if k.endswith(".parquet")] == [f"dt={day(5)}/part-00000.parquet"]
    stages: list[tuple[Any, str, Exception]] = [
        (batches, "day_rows", RuntimeError("prepare: reading the second day failed")),  # prepare thread
        (commit, "output_table", OSError("write: disk full on the second batch")),  # write thread
        (OnnxScorer, "predict_encoded", MemoryError("score: onnxruntime out of memory")),  # scoring thread
    ]
    for owner, name, error in stages:
        with monkeypatch.context() as patch:
            patch.setattr(owner, name, _fail_on_second_call(getattr(owner, name), error))
            with pytest.raises(type(error), match=str(error).split(":")[0]):
                predict_interval(settings, INTERVAL, f"{MODEL}@champion")
        assert _files(root) == before, name  # day 5 unchanged, day 6 never appeared, nothing staged
        assert not [t.name for t in threading.enumerate() if t.name.startswith("predict-")], name
    # and then the run goes through: both days written, nothing else left beside them
    summary = predict_interval(settings, INTERVAL, f"{MODEL}@champion")
    assert [p["dt"] for p in summary["partitions"]] == [day(5).isoformat(), day(6).isoformat()]
    assert sorted(_files(root)) == [
        f"dt={d}/{name}" for d in (day(5), day(6)) for name in ("_manifest.json", "part-00000.parquet")
    ]
    assert not list((root.data_root / "predictions" / MODEL).glob(".*"))  # no staging or lock entries
