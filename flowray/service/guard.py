"""What every request meets before the routes (a plain ASGI middleware, so that nothing of
the body has been read yet):

- a body is counted as it arrives, chunked or not, and refused past the limit (413), so no
  request makes the service hold more than that in memory;
- an API call without any token (a bearer token, or the web page's session cookie) is refused
  (401) before its body is read;
- every answer says that it is not to be framed, sniffed or sent on as a referrer (the
  guard's own refusals too), and an API answer that says nothing of caching is not to be
  stored: the page's session cookie makes an answer private, and a kept copy of a run's log or
  of the secrets' names would outlive the sign-out in the browser's cache;
- a NUL character in the path or query is refused (400): no database stores it in text.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Routes under /api/v1 that need no token: the page's sign-in (it checks its own).
OPEN_API_PATHS: frozenset[str] = frozenset({"/api/v1/session"})
SESSION_COOKIE = b"flowray_session="
SAFETY_HEADERS = [(b"x-content-type-options", b"nosniff"),
                  (b"x-frame-options", b"DENY"),
                  (b"referrer-policy", b"no-referrer")]
NO_STORE = (b"cache-control", b"no-store")


class _TooLarge(HTTPException):
    """Raised by the counting ``receive``: an HTTPException, so that FastAPI, reading the
    body, passes it on to the app's handler (a JSON 413) rather than calling it a bad body."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body is larger than {limit} bytes")


class Guard:
    def __init__(self, app: ASGIApp, *, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        raw_query: bytes = scope.get("query_string", b"")
        if "\0" in path or b"%00" in raw_query or b"\0" in raw_query:
            await _answer(send, 400, "a NUL character is not allowed in a path or query")
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        if path.startswith("/api/") and path not in OPEN_API_PATHS \
                and b"authorization" not in headers \
                and SESSION_COOKIE not in headers.get(b"cookie", b""):
            await _answer(send, 401, "a token is needed: Authorization: Bearer <token>")
            return
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                await _answer(send, 400, "Content-Length is not a number")
                return
            if int(length) > self.limit and not path.startswith("/hooks/"):
                await _answer(send, 413, f"the body is larger than {self.limit} bytes")
                return
        received = 0
        started = False
        api = path.startswith("/api/")

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [*message.get("headers", []), *SAFETY_HEADERS]
                if api and not any(k.lower() == b"cache-control" for k, _ in headers):
                    headers.append(NO_STORE)
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if not started:
                await _answer(send, 413, f"the body is larger than {self.limit} bytes")


async def _answer(send: Send, status: int, message: str) -> None:
    """A refusal of the guard's own, with the headers every answer has."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), NO_STORE, *SAFETY_HEADERS]})
    await send({"type": "http.response.body", "body": body})
