"""Evaluation of a candidate model (see docs/evaluation.md): the entry is :mod:`.report`.

Metrics and calibration live in :mod:`ml_tasks.models.metrics`; here are the baselines, slices, behavioural
tests, single-feature AUCs (leakage) and the model card.
"""
