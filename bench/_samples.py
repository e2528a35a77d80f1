"""Where the benches find the real Chicago samples: ``$FLYWHEEL_CHICAGO_SAMPLES``, else
``../shared/datasets/chicago_taxi`` beside the repo (the tests' rule, tests/conftest.py)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CHICAGO_SAMPLES = Path(
    os.environ.get("FLYWHEEL_CHICAGO_SAMPLES", REPO.parent / "shared" / "datasets" / "chicago_taxi")
)


def add_samples_argument(parser: argparse.ArgumentParser) -> None:
    """``--samples DIR``: the folder of the sample CSV files (default :data:`CHICAGO_SAMPLES`)."""
    parser.add_argument("--samples", type=Path, default=CHICAGO_SAMPLES, help="the Chicago samples' folder")
