"""The monitor's baseline tags: a version the registry cannot give falls back (logged); bugs surface."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from ml_tasks.models import registry
from ml_tasks.models.registry import RegistryError
from ml_tasks.monitoring.monitor import _version_tags
from ml_tasks.settings import Settings


def test_an_unknown_version_falls_back_with_the_reason_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tags = _version_tags(Settings(data_root=str(tmp_path)), "taxi_tips")
    with caplog.at_level(logging.WARNING, logger="ml_tasks.monitoring.monitor"):
        assert tags("7") is None  # a real (empty) SQLite registry: MLflow raises MlflowException
    assert "no tags for taxi_tips version 7" in caplog.text
    assert "baseline from the reference" in caplog.text


def test_registry_errors_fall_back_other_errors_surface(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tags = _version_tags(Settings(data_root=str(tmp_path)), "taxi_tips")

    def refuse(*_: object) -> None:
        raise RegistryError("the artifact does not verify")

    monkeypatch.setattr(registry, "get_version", refuse)
    with caplog.at_level(logging.WARNING, logger="ml_tasks.monitoring.monitor"):
        assert tags("3") is None
    assert "the artifact does not verify" in caplog.text

    def broken(*_: object) -> None:
        raise TypeError("a bug, not a missing version")

    monkeypatch.setattr(registry, "get_version", broken)
    with pytest.raises(TypeError, match="a bug"):
        tags("3")
