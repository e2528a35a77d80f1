"""An ASGI app imported on its first request.

Airflow loads plugins in every process (each task's runner integrates plugin macros, the DAG processor
serialises extra links): importing FastAPI and the API server's security module there would cost ~2 s
per task for nothing. Only the API server ever calls the app, and it pays the import once.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class LazyApp:
    """``LazyApp("package.module:attr")``: the ASGI app at that address, imported when first called."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._app: ASGIApp | None = None

    def load(self) -> ASGIApp:
        if self._app is None:
            module, _, attr = self.address.partition(":")
            self._app = getattr(importlib.import_module(module), attr)
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.load()(scope, receive, send)

    def __repr__(self) -> str:
        return f"LazyApp({self.address!r})"
