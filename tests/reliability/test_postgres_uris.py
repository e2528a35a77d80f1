"""Bad PostgreSQL URIs, as users paste them: one ``ml-tasks: error:`` line each, never the password."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from tests.reliability.conftest import outcome

SECRET = "S3cretPw"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


PORT = _closed_port()
URIS = [
    # (name, URI, the error line)
    ("unescaped @ in the password", f"postgresql://etl:x@{SECRET}@127.0.0.1:{PORT}/trips",
     r"^postgres: cannot connect to 127\.0\.0\.1/trips/public\.trips: .*refused"),
    ("two unescaped @", f"postgresql://etl:a@b@{SECRET}@127.0.0.1:{PORT}/trips",
     r"^postgres: cannot connect to 127\.0\.0\.1/trips/public\.trips: "),
    ("percent-encoded @", f"postgresql://etl:x%40{SECRET}@127.0.0.1:{PORT}/trips",
     r"^postgres: cannot connect to 127\.0\.0\.1/trips/public\.trips: "),
    ("non-numeric port", f"postgresql://etl:{SECRET}@127.0.0.1:notaport/trips",
     r"^postgres URI has a port that is not a number"),
    ("non-numeric port and an @", f"postgresql://etl:x@{SECRET}@127.0.0.1:5x/trips",
     r"^postgres URI has a port that is not a number"),
    ("not a URL", f"host=127.0.0.1 password={SECRET}", r"^postgres URI is not a valid SQLAlchemy URL"),
    ("another scheme", f"mysql://etl:{SECRET}@127.0.0.1/trips",
     r"^postgres URI must use the postgresql scheme"),
    ("unknown host", f"postgresql://etl:{SECRET}@no-such-host.invalid/trips",
     r"^postgres: cannot connect to no-such-host\.invalid/trips/public\.trips: "),
    ("port out of range", f"postgresql://etl:{SECRET}@127.0.0.1:99999/trips",
     r"^postgres: cannot connect to "),
]  # fmt: skip


@pytest.mark.parametrize(("uri", "error"), [u[1:] for u in URIS], ids=[u[0] for u in URIS])
def test_bad_uri_is_one_line_without_the_password(uri: str, error: str, data_root: Path) -> None:
    argv = ["extract", "--source", "postgres", "--table", "public.trips", "--start", "2024-01-01"]
    result = outcome(*argv, "--option", "connect_timeout=1", env={"FLYWHEEL_POSTGRES_URI": uri})

    assert result.error is not None and re.search(error, result.error), result.error
    assert SECRET not in result.stderr, result.stderr
    assert not any(data_root.rglob("*.parquet"))


SINK_URIS = [
    # (name, URI, the error line)
    ("unescaped @ in the password", f"postgresql://etl:x@{SECRET}@127.0.0.1:{PORT}/preds",
     r"^upserting predictions into PostgreSQL table 'preds' failed: .*127\.0\.0\.1.*refused"),
    ("non-numeric port", f"postgresql://etl:x@{SECRET}@127.0.0.1:notaport/preds",
     r"^predictions postgres URI has a port that is not a number"),
]  # fmt: skip


@pytest.mark.parametrize(("uri", "error"), [u[1:] for u in SINK_URIS], ids=[u[0] for u in SINK_URIS])
def test_predictions_sink_parses_uris_like_the_source(uri: str, error: str) -> None:
    """The predictions table's URI (``FLYWHEEL_PREDICTIONS_POSTGRES_URI``): the source's parse. Called
    directly: the CLI's redactor would mask the password anyway, and this checks the error itself."""
    import pyarrow as pa

    from ml_tasks.prediction.postgres import upsert_tables
    from ml_tasks.prediction.schema import CORE_COLUMNS, PredictionError

    with pytest.raises(PredictionError) as info:
        upsert_tables(uri, "preds", [pa.schema(CORE_COLUMNS).empty_table()])
    message = str(info.value)
    assert re.search(error, message), message
    assert SECRET not in message and "\n" not in message
