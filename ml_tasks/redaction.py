"""One redaction filter for everything a step prints: configured secret values and URI userinfo masked.

The CLI installs it once per process (:func:`install`) on its log handlers and on ``sys.stdout`` /
``sys.stderr``, so a secret is masked whatever message carries it: a log line of ours or of a library,
an echoed HTTP error body, a traceback, the ``ml-tasks: error:`` line. Rationale: ``docs/reliability.md``.
"""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO
from urllib.parse import quote, quote_plus, unquote

MASK = "***"
#: shorter values are not masked: masking "pass" would turn "passed" into "***ed" everywhere and hide
#: nothing real (the userinfo of a URI is masked whatever its length)
MIN_SECRET_CHARS = 5
#: ``scheme://userinfo@``: the userinfo runs to the LAST ``@`` of the authority (urllib's rule too), so a
#: password holding an unescaped ``@`` is masked whole
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^/\s?#'\"]*@)")
#: environment variables whose values are secrets by their name (as Airflow's secrets masker decides)
SECRET_NAME = re.compile(
    r"(TOKEN|PASSWORD|PASSWD|SECRET|PRIVATE_KEY|ACCESS_KEY|API_KEY|APIKEY|FERNET|CREDENTIAL)", re.IGNORECASE
)


def userinfo_password(uri: str) -> str | None:
    """The password of ``scheme://user:password@host...``, split at the authority's last ``@``."""
    if "://" not in uri:
        return None
    authority = uri.split("://", 1)[1].split("/", 1)[0]
    userinfo, at, _ = authority.rpartition("@")
    if not at or ":" not in userinfo:
        return None
    return userinfo.split(":", 1)[1] or None


def secret_forms(value: str) -> set[str]:
    """``value`` as it may appear in text: raw, URL-quoted, JSON-escaped; for a URI also its password
    (and the parts of a password around an unescaped ``@``, which a wrong parse prints as a host)."""
    values = {value}
    password = userinfo_password(value)
    if password:
        values |= {password, unquote(password), *password.split("@")}
    forms: set[str] = set()
    for v in values:
        forms |= {v, quote(v, safe=""), quote_plus(v), json.dumps(v)[1:-1], repr(v)[1:-1]}
    return {f for f in forms if len(f) >= MIN_SECRET_CHARS}


class Redactor:
    """Masks registered secret values and the userinfo of any URI in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self.add(*secrets)

    def add(self, *secrets: str | None) -> None:
        """Register secret values (``None`` and empty values are ignored)."""
        for secret in secrets:
            if secret:
                self._forms |= secret_forms(secret)
        if self._forms:
            # longest first: a URI is masked whole before its password alone
            alternation = "|".join(re.escape(f) for f in sorted(self._forms, key=len, reverse=True))
            self._pattern = re.compile(alternation)

    def __call__(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        return _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)

    def __len__(self) -> int:
        return len(self._forms)


class RedactingFilter(logging.Filter):
    """A handler filter: the record's message, exception and stack text redacted before formatting."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: keep what there is, redacted
            message = f"{record.msg} {record.args}"
        record.msg, record.args = self.redactor(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redactor(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redactor(record.stack_info)
        return True


class RedactingStream(io.TextIOBase):
    """A text stream that writes whole lines, redacted, to ``target`` (a secret is never split)."""

    def __init__(self, target: TextIO, redactor: Redactor) -> None:
        super().__init__()
        self.target = target
        self.redactor = redactor
        self._pending = ""

    def write(self, text: str) -> int:
        self._pending += text
        if "\n" in self._pending:
            complete, _, self._pending = self._pending.rpartition("\n")
            self.target.write(self.redactor(complete + "\n"))
        return len(text)

    def flush(self) -> None:
        if self._pending:
            self.target.write(self.redactor(self._pending))
            self._pending = ""
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.target, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:  # buffer, errors...: as the wrapped stream has them
        return getattr(self.target, name)


_active: list[Redactor] = []


def redact(text: str) -> str:
    """``text`` through the installed redactor (unchanged when none is installed): for what a step writes
    elsewhere than its streams, such as the XCom file of a pod."""
    return _active[-1](text) if _active else text


@contextmanager
def install(redactor: Redactor) -> Iterator[Redactor]:
    """Redact the root logger's handlers and ``sys.stdout`` / ``sys.stderr`` until the block ends."""
    log_filter = RedactingFilter(redactor)
    root = logging.getLogger()
    handlers = list(root.handlers)
    for handler in handlers:
        handler.addFilter(log_filter)
    saved = sys.stdout, sys.stderr
    out, err = RedactingStream(sys.stdout, redactor), RedactingStream(sys.stderr, redactor)
    sys.stdout, sys.stderr = out, err
    _active.append(redactor)
    try:
        yield redactor
    finally:
        _active.remove(redactor)
        out.flush()
        err.flush()
        sys.stdout, sys.stderr = saved
        for handler in handlers:
            handler.removeFilter(log_filter)
