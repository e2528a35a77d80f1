"""No secret in any log, error, summary, report or partition, nor sent to another host.

The redaction filter (``ml_tasks.redaction``) masks every configured secret value and URI userinfo in all
the CLI prints; the marker test sets every secret setting to a marker, runs the failing paths of the
break-it run (finding 1: an error body echoing the token; 2: a redirect to another host; 3: a password
with an unescaped ``@``) and greps everything they produced for it.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import SecretStr

from ml_tasks.redaction import MASK, RedactingFilter, Redactor
from ml_tasks.settings import Settings
from tests.conftest import run_cli, run_cli_process
from tests.integration._servers.soda import SodaServer
from tests.integration.test_chicago_source import NEW, portal_rows

MARKER = "mrk7Hq2zSecretMarker"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the filter ------------------------------------------------------------------------------------------
def test_values_are_masked_in_every_form_they_travel_in() -> None:
    redact = Redactor([MARKER + "/+ @x"])
    raw = MARKER + "/+ @x"
    for text in (raw, quote(raw, safe=""), json.dumps(raw)[1:-1], repr(raw)[1:-1]):
        assert redact(f"before {text} after") == f"before {MASK} after", text


def test_uri_userinfo_is_masked_whatever_the_uri() -> None:
    redact = Redactor()
    assert redact("to postgresql://etl:p@ss@db:5432/x failed") == "to postgresql://***@db:5432/x failed"
    assert redact("GET https://user:tok@example.org/a?b=c") == "GET https://***@example.org/a?b=c"
    assert redact("no userinfo: http://example.org/a@b") == "no userinfo: http://example.org/a@b"


def test_a_password_with_an_unescaped_at_is_masked_in_pieces_too() -> None:
    redact = Redactor([f"postgresql://etl:x@{MARKER}@db/trips"])
    # what a wrong parse prints: the password's tail as the host
    assert MARKER not in redact(f"failed to resolve host '{MARKER}@db'")


def test_short_values_are_not_masked() -> None:
    assert Redactor(["pass"])("the batch passed") == "the batch passed"


def test_log_records_messages_args_and_tracebacks_are_masked() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "token %s", (MARKER,), None)
    try:
        raise ValueError(f"echo {MARKER}")
    except ValueError:
        record.exc_info = sys.exc_info()
    RedactingFilter(Redactor([MARKER])).filter(record)
    text = logging.Formatter().format(record)
    assert MARKER not in text and text.startswith(f"token {MASK}") and f"ValueError: echo {MASK}" in text


def test_debug_tracebacks_are_masked(data_root: Path) -> None:
    uri = f"postgresql://etl:{MARKER}@127.0.0.1:notaport/trips"
    env = {"FLYWHEEL_POSTGRES_URI": uri, "FLYWHEEL_DEBUG": "1"}
    result = run_cli(
        "extract", "--source", "postgres", "--table", "t", "--start", "2024-01-01", env=env, check=False
    )
    assert result["returncode"] == 1
    assert "Traceback" in result["stderr"] and "SourceError" in result["stderr"]  # asked for: shown
    assert MARKER not in result["stderr"]


# -- the marker test -------------------------------------------------------------------------------------
def secret_env(soda_url: str) -> dict[str, str]:
    """Every secret setting of ``Settings`` set to a value holding the marker."""
    port = _closed_port()
    env = {
        "FLYWHEEL_CHICAGO_BASE_URL": soda_url,
        "FLYWHEEL_CHICAGO_APP_TOKEN": MARKER,
        "FLYWHEEL_POSTGRES_URI": f"postgresql://etl:x@{MARKER}@127.0.0.1:{port}/trips",
        "FLYWHEEL_PREDICTIONS_POSTGRES_URI": f"postgresql://etl:{MARKER}@127.0.0.1:{port}/preds",
    }
    secret_fields = {n for n, f in Settings.model_fields.items() if f.annotation == SecretStr | None}
    assert {f"FLYWHEEL_{n.upper()}" for n in secret_fields} <= set(env), "a new secret setting: cover it"
    return env


def test_no_marker_anywhere(tmp_path: Path, data_root: Path) -> None:
    here, there = SodaServer(portal_rows()).start(), SodaServer(portal_rows()).start()
    outputs: list[str] = []
    try:
        env = secret_env(here.url)
        chicago = ["extract", "--source", "chicago", "--start", "2024-01-01", "--dataset-id", NEW,
                   "--option", "max_attempts=1", "--option", "page_size=10"]  # fmt: skip
        # 1: an error body echoing the request headers (as a process, as a DAG runs it)
        here.sticky_fault = "403echo"
        failed = run_cli_process(*chicago, env=env, check=False)
        assert failed["returncode"] == 1 and "HTTP 403" in failed["stderr"]
        outputs += [failed["stderr"], failed["stdout"]]
        # 2: a redirect to another host, then a good run that writes partitions and manifests
        here.sticky_fault = f"redirect:{there.url.replace('127.0.0.1', 'localhost')}"
        outputs.append(json.dumps(run_cli(*chicago, env=env)))
        here.sticky_fault = None
        outputs.append(json.dumps(run_cli(*chicago, env=env)))
        # 3: the PostgreSQL source: a password with an unescaped @, a bad port, nothing listening
        postgres = ["extract", "--source", "postgres", "--table", "t", "--start", "2024-01-01"]
        escaped = env["FLYWHEEL_POSTGRES_URI"].replace(f"x@{MARKER}", quote(f"x@{MARKER}", safe=""))
        for uri in (env["FLYWHEEL_POSTGRES_URI"], escaped):
            result = run_cli(*postgres, "-o", "connect_timeout=1", env={**env, "FLYWHEEL_POSTGRES_URI": uri},
                             check=False)  # fmt: skip
            assert result["returncode"] == 1 and "cannot connect to 127.0.0.1/" in result["stderr"]
            outputs += [result["stderr"], result["stdout"]]
        bad_port = f"postgresql://etl:{MARKER}@127.0.0.1:notaport/trips"
        result = run_cli(*postgres, env={**env, "FLYWHEEL_POSTGRES_URI": bad_port}, check=False)
        outputs += [result["stderr"], result["stdout"]]
        # the rest of the ingest chain over the chicago day, with every secret set: summaries and reports
        day = ["--start", "2024-01-01"]
        for step in (["transform", *day], ["validate", *day, "--max-reject-rate", "1"], ["publish", *day]):
            outputs.append(json.dumps(run_cli(*step, env=env)))
    finally:
        here.stop()
        there.stop()

    assert all(r.headers.get("X-App-Token") is None for r in there.requests) and len(there.requests) == 2
    assert next(r.headers.get("X-App-Token") for r in here.requests) == MARKER  # sent where it belongs
    files = [p for p in data_root.rglob("*") if p.is_file()]
    assert any(p.name.endswith(".parquet") for p in files) and any(p.name == "accounting.json" for p in files)
    for form in {MARKER, quote(MARKER, safe="")}:
        for text in outputs:
            assert form not in text, text[-2000:]
        for path in files:
            assert form.encode() not in path.read_bytes(), path
        for request in there.requests:
            assert form not in json.dumps([request.path, request.headers])


def test_the_summary_and_the_pod_xcom_file_are_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ml_tasks import redaction
    from ml_tasks.jsonout import XCOM_ENV, emit

    monkeypatch.setenv(XCOM_ENV, str(tmp_path / "xcom" / "return.json"))
    with redaction.install(Redactor([MARKER])):
        uri = "postgresql://etl:pw@db/x"  # pragma: allowlist secret
        emit({"step": "x", "echo": f"token {MARKER}", "uri": uri})
    expected = {"step": "x", "echo": f"token {MASK}", "uri": f"postgresql://{MASK}@db/x"}
    assert json.loads((tmp_path / "xcom" / "return.json").read_text()) == expected
    assert json.loads(capsys.readouterr().out) == expected
