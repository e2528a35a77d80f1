"""Flywheel task logic: plain, importable steps of the batch ML lifecycle (never imports airflow)."""

__version__ = "0.1.0"
