"""Pure ASGI middleware (no BaseHTTPMiddleware: it costs a task per request).

- BodyLimit: a body over the limit is a 413 before any route parses it; a request line and headers
  over 10 KiB are a 431, as API Gateway refuses them in AWS (uvicorn's httptools parser has no
  limit of its own locally).
- Correlation: every request has a correlation id (X-Correlation-Id, else API Gateway's request
  id, else a new one), echoed in the response and bound to the log lines.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any, Awaitable, Callable

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_CORRELATION_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


async def _send_problem(send: Send, status: int, slug: str, title: str, detail: str, scope: Scope) -> None:
    body = json.dumps({"type": f"https://jobbridge.dev/problems/{slug}", "title": title, "status": status,
                       "detail": detail, "errors": [],
                       "correlation_id": scope.get("state", {}).get("correlation_id")}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/problem+json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


# API Gateway HTTP API: "Total combined size of request line and header values: 10240 bytes"
# (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-quotas.html).
MAX_HEAD_BYTES = 10240


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int, max_head_bytes: int = MAX_HEAD_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_head_bytes = max_head_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            head = len(scope.get("raw_path") or scope.get("path", "").encode()) + len(scope.get("query_string", b""))
            head += sum(len(name) + len(value) for name, value in scope.get("headers", []))
            if head > self.max_head_bytes:
                return await _send_problem(send, 431, "request-header-fields-too-large",
                                           "Request header fields too large",
                                           f"the request line and headers exceed {self.max_head_bytes} bytes", scope)
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS", "DELETE"):
            return await self.app(scope, receive, send)
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _send_problem(send, 400, "bad-request", "Bad request", "invalid Content-Length", scope)
                if declared > self.max_bytes:
                    return await self._too_large(scope, send)
        # Buffer the body (bounded by the limit) and replay it: the limit holds for chunked
        # bodies too, and the route sees an ordinary stream.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._too_large(scope, send)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, send: Send) -> None:
        await _send_problem(send, 413, "payload-too-large", "Payload too large",
                            f"the request body is larger than {self.max_bytes} bytes", scope)


class Correlation:
    header = b"x-correlation-id"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cid = None
        for name, value in scope.get("headers", []):
            if name == self.header:
                candidate = value.decode("latin-1")
                cid = candidate if _CORRELATION_RE.match(candidate) else None
                break
        if cid is None:
            event = scope.get("aws.event") or {}
            cid = (event.get("requestContext") or {}).get("requestId") or uuid.uuid4().hex
        scope.setdefault("state", {})["correlation_id"] = cid

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (self.header, cid.encode())]
            await send(message)

        await self.app(scope, receive, send_with_id)
