"""``python -m scripts.demo`` (``make demo``): the pipeline stages on a local Airflow (see cli.py)."""

from scripts.demo.cli import STAGES, main

__all__ = ["STAGES", "main"]
