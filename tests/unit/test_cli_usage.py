"""Usage errors of ``ml-tasks`` are reported by click (exit 2, a message, no traceback)."""

from __future__ import annotations

import pytest

from ml_tasks import cli


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no-such-step"], "No such command 'no-such-step'"),
        (["extract", "--start", "2024-01-01", "--option", "bad"], "--option expects key=value, got 'bad'"),
        (["transform"], "Missing option '--start'"),
    ],
)
def test_a_usage_error_exits_2_with_its_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.replace("│", " ").split())
    assert "Traceback" not in err
