"""The promote step's staleness check: a retry completes its own promotion; a real move is refused."""

from __future__ import annotations

import pytest

from ml_tasks.training.release import champion_moved


@pytest.mark.parametrize(
    ("current", "compared", "version", "promote", "force", "moved"),
    [
        # nothing changed since the gate compared: no champion then and now, or the same one
        (None, None, "3", True, False, False),
        ("2", "2", "3", True, False, False),
        # another run promoted version 4 after this candidate was evaluated against 2: stale
        ("4", "2", "3", True, False, True),
        ("4", None, "3", False, False, True),
        # a retry: this promotion moved the alias to its own version 3, then failed (server gone)
        ("3", "2", "3", True, False, False),
        ("3", None, "3", True, False, False),
        # the same version holds the alias but this gate says "challenger" (a forced champion re-judged)
        ("3", "2", "3", False, False, True),
        # a forced promotion never asks
        ("4", "2", "3", True, True, False),
        # version numbers compare as text (MLflow returns strings; reports may hold ints)
        (3, "3", "5", True, False, False),
    ],
)
def test_champion_moved(
    current: object, compared: object, version: object, promote: bool, force: bool, moved: bool
) -> None:
    assert champion_moved(current, compared, version, promote=promote, force=force) is moved
