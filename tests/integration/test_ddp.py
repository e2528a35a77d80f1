"""DDP on the CPU: ``torchrun --standalone --nproc-per-node 2`` with gloo runs the real training entry point.

Asserts that both ranks end with identical weights (each rank logs the hash of its final state dict),
that only rank 0 writes the bundle and the JSON summary, and that the model learnt something.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

from ml_tasks.models.network import load_bundle
from tests.unit.models.test_network import synthetic_frame


def torchrun(data: Path, out: Path, config: dict[str, object]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path.cwd())}
    proc = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
            "-m", "ml_tasks.cli", "train-worker",
            "--training-set", str(data), "--out", str(out), "--config", json.dumps(config),
            "--device", "cpu", "--threads", "1", "--val-fraction", "0.15", "--test-fraction", "0.15",
        ],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def test_two_gloo_processes_train_identical_weights(tmp_path: Path) -> None:
    data = tmp_path / "training.parquet"
    pq.write_table(synthetic_frame(4000, seed=3), data)
    out = tmp_path / "bundle"
    # the smooth, fast-learning settings: this test is about identical ranks, not about accuracy
    config = {
        "hidden": [32],
        "max_epochs": 4,
        "patience": 10,
        "batch_size": 128,
        "numeric_bins": 0,
        "lr": 3e-3,
    }
    proc = torchrun(data, out, config)
    log = proc.stderr

    assert re.search(r"rank0 .*process group: backend gloo, rank 0 of 2", log), log[-3000:]
    assert re.search(r"rank1 .*process group: backend gloo, rank 1 of 2", log), log[-3000:]
    hashes = dict(re.findall(r"rank (\d) of 2: final weights sha256 ([0-9a-f]{64})", log))
    assert set(hashes) == {"0", "1"}, log[-3000:]
    assert hashes["0"] == hashes["1"], "the ranks ended with different weights"
    # every rank trained the same epochs (the stop decision is rank 0's, broadcast)
    assert len(re.findall(r"rank0 .*epoch \d+: train loss", log)) == len(
        re.findall(r"rank1 .*epoch \d+: train", log)
    )

    # rank 0 alone writes the bundle and prints the summary
    assert len(re.findall(r"bundle written: ", log)) == 1
    assert re.search(r"rank0 .*bundle written: ", log)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stdout
    summary = json.loads(lines[0])
    assert summary["world_size"] == 2 and summary["device"] == "cpu"
    assert summary["metrics"]["validation"]["roc_auc"] > 0.8  # the synthetic signal is strong
    assert summary["metrics"]["test"]["roc_auc"] > 0.8

    # the bundle holds the weights the ranks agreed on
    bundle = load_bundle(out)
    assert bundle.metadata["world_size"] == 2
    assert bundle.metadata["training_fingerprint"]
    checkpoint = tmp_path / "bundle.checkpoints" / "last.pt"
    assert checkpoint.is_file()
    probs = bundle.predict_proba(pq.read_table(data).slice(0, 50))
    assert probs.shape == (50,) and ((probs > 0) & (probs < 1)).all()

    # a restarted job (a rescheduled pod) resumes from rank 0's checkpoint on every rank: the run had
    # finished, so no epoch is trained again and both ranks end with the same weights as before
    again = torchrun(data, out, config)
    assert "resuming from" in again.stderr
    assert not re.search(r"epoch \d+: train loss", again.stderr)
    rehashed = dict(re.findall(r"rank (\d) of 2: final weights sha256 ([0-9a-f]{64})", again.stderr))
    assert rehashed == hashes
    assert json.loads(again.stdout.strip())["resumed_from_epoch"] == summary["epochs"]
