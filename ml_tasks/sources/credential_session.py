"""A requests session that keeps credential headers (an app token, a password) on their own host and port."""

from __future__ import annotations

import logging
import urllib.parse

import requests

log = logging.getLogger(__name__)

CREDENTIAL_HEADERS = ("X-App-Token", "Authorization", "Cookie")


def _origin(url: str) -> tuple[str, int | None]:
    parts = urllib.parse.urlsplit(url)
    default = {"http": 80, "https": 443}.get(parts.scheme.lower())
    return (parts.hostname or "").lower(), parts.port or default


class CredentialSession(requests.Session):
    """A session that sends credential headers only to ``credential_url``'s host and port.

    requests drops ``Authorization`` on a redirect to another host, but keeps custom headers such as
    ``X-App-Token``: this session drops every credential header on any redirect that leaves the host
    (an upgrade from http to https on the same host keeps them; a downgrade to http does not).
    """

    def __init__(self, credential_url: str) -> None:
        super().__init__()
        self.credential_url = credential_url

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        super().rebuild_auth(prepared_request, response)  # type: ignore[no-untyped-call]
        target = urllib.parse.urlsplit(prepared_request.url or "")
        home = urllib.parse.urlsplit(self.credential_url)
        upgrade = home.scheme == "http" and target.scheme == "https" and target.port in (None, 443)
        keep = _origin(target.geturl()) == _origin(home.geturl()) or (
            upgrade and (target.hostname or "").lower() == (home.hostname or "").lower()
        )
        if not keep or (home.scheme == "https" and target.scheme != "https"):
            for name in CREDENTIAL_HEADERS:
                prepared_request.headers.pop(name, None)
            log.warning(
                "redirected from %s to %s://%s: credential headers not sent there",
                home.hostname, target.scheme, target.hostname,
            )  # fmt: skip
