"""The one-JSON-line contract, read back: the last stdout line that is a JSON object."""

from __future__ import annotations

import pytest

from ml_tasks.jsonout import read_summary


def test_the_last_json_object_line_is_the_summary() -> None:
    out = 'rank0 starting\n{"step": "old"}\nnot json {\n{"step": "train", "rows": 3}\n\n'
    assert read_summary(out) == {"step": "train", "rows": 3}


@pytest.mark.parametrize("out", ["", "\n\n", "hello\n", "[1, 2]\n", "{broken\n"])
def test_no_summary_is_a_clear_error(out: str) -> None:
    with pytest.raises(ValueError, match="no JSON summary line on stdout"):
        read_summary(out)
