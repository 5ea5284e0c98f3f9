"""Security headers on every response, and CORS when origins are configured.

The APIs answer JSON about people (e-mail addresses, scores): no browser or proxy may
store it (``Cache-Control: no-store``), guess another type for it (``nosniff``), frame
it, or pass on the URL it came from. The JSON answers load nothing, so their policy
is ``default-src 'none'``. The interactive docs (Swagger UI, ReDoc) are HTML pages
that load their scripts and styles from a CDN and run an inline script, so they get
only the framing rule: they show the OpenAPI document, no lead data.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

Headers = list[tuple[bytes, bytes]]

COMMON: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
API_POLICY = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
DOCS_POLICY = (b"content-security-policy", b"frame-ancestors 'none'")


class SecurityHeaders:
    """Adds the headers a response does not already set itself (pure ASGI: cheap)."""

    def __init__(self, app: ASGIApp, docs_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.docs_paths = frozenset(docs_paths)
        self.api_headers = [*COMMON, API_POLICY]
        self.docs_headers = [*COMMON, DOCS_POLICY]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.docs_headers if scope["path"] in self.docs_paths else self.api_headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                present = {name.lower() for name, _ in headers}
                headers.extend(item for item in extra if item[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)
