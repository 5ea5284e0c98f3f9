"""HTTP/1.1 connections with bounds: what a client may hold of a server, and for how long.

uvicorn's httptools protocol, the fastest it has, bounds none of it: a header can grow
without end (httptools buffers an unfinished header whole, concatenating every chunk),
any number of headers is taken, a connection that never finishes its headers stays
open forever (uvicorn only times out idle keep-alive connections), and a body can be
trickled a byte at a time. uvicorn's h11 protocol bounds the header size alone, at a
third of the speed. So leadflow serves with :class:`BoundedHttpProtocol`, the httptools
protocol plus the missing bounds, each answered with its status and the connection
closed: 431 (header block too large, too many headers), 408 (headers or body not
received in time), 503 (more connections than allowed, refused before reading a byte).
"""

from __future__ import annotations

import asyncio
import http
import logging
from dataclasses import dataclass

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shared import http_metrics

log = logging.getLogger("leadflow.http")


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may take; see the ``http_*`` settings."""

    max_header_bytes: int
    max_headers: int
    header_timeout_seconds: float
    body_timeout_seconds: float
    max_connections: int


class Refusal(Exception):
    """Why a request is answered by the connection itself, before or instead of the app."""

    def __init__(self, status: int, reason: str, metric: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.metric = metric


def refusal_response(status: int, reason: str) -> bytes:
    """A complete response that closes the connection, with no app behind it; its body in
    the shape of every other error (``{"detail": ...}``)."""
    body = orjson.dumps({"detail": reason})
    phrase = http.HTTPStatus(status).phrase
    return (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "content-type: application/json\r\n"
        "x-content-type-options: nosniff\r\n"
        "cache-control: no-store\r\n"
        f"content-length: {len(body)}\r\n"
        "connection: close\r\n\r\n"
    ).encode("ascii") + body


def _head_too_large() -> Refusal:
    return Refusal(431, "request header block too large", "header_too_large")


class BoundedHttpProtocol(HttpToolsProtocol):
    """One connection, bounded in header bytes, header count, header and body time.

    Header bytes are counted twice over, each count checked against the limit: exactly,
    as the parser hands over the URL and each complete header; and, while a header
    block is unfinished, as raw bytes received, since the parser hands over nothing of
    a header until it is complete. The raw count skips the read in which a request
    begins (its other bytes may be a previous request, or this one's body), so an
    unfinished block holds at most the limit plus one read.
    """

    limits: HttpLimits

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._in_head = False  # until a request's first byte
        self._in_body = False
        self._began_in_this_read = False
        self._head_bytes = 0
        self._raw_head_bytes = 0
        self._headers_seen = 0
        if len(self.connections) > self.limits.max_connections:
            self._refuse(Refusal(503, "too many connections", "too_many_connections"))
            return
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        self._began_in_this_read = False
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if isinstance(exc.__context__, Refusal):
                self._refuse(exc.__context__)
                return
            self._refuse(Refusal(400, "invalid HTTP request", "malformed"))
            return
        except httptools.HttpParserUpgrade:
            pass  # no upgrade is served (ws="none"): the request goes to the app as it is
        except httptools.HttpParserError:
            self._refuse(Refusal(400, "invalid HTTP request", "malformed"))
            return
        if self._in_head and not self._began_in_this_read:
            self._raw_head_bytes += len(data)
            if self._raw_head_bytes > self.limits.max_header_bytes:
                self._refuse(_head_too_large())
                return
        if self._in_body and self._body_timer is None and not self.transport.is_closing():
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout_seconds, self._body_timed_out
            )

    # parser callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._began_in_this_read = True
        self._head_bytes = self._raw_head_bytes = 0
        self._headers_seen = 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers_seen += 1
        if self._headers_seen > self.limits.max_headers:
            raise Refusal(431, "too many request headers", "too_many_headers")
        self._count_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._in_body = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    # bounds

    def _count_head(self, size: int) -> None:
        """Exact bytes of the parts the parser handed over; raised out of its callback."""
        self._head_bytes += size
        if self._head_bytes > self.limits.max_header_bytes:
            raise _head_too_large()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(
            self.limits.header_timeout_seconds, self._head_timed_out
        )

    def _head_timed_out(self) -> None:
        """A request begun is answered 408; a connection that never sent a byte is closed
        without a word (an unasked-for answer could be read as that of a later request)."""
        self._head_timer = None
        if self._in_head:
            self._refuse(Refusal(408, "request headers not received in time", "header_timeout"))
        elif not self._in_body and self.cycle is None and not self.transport.is_closing():
            log.debug("%s: no request within the header timeout", self._peer())
            self._drop("idle_timeout")

    def _body_timed_out(self) -> None:
        self._body_timer = None
        if not self._in_body:
            return
        cycle = self.cycle
        if cycle is not None and cycle.response_started:
            self._drop("body_timeout")
            return
        if cycle is not None:
            cycle.response_complete = True  # whatever the app sends now goes nowhere
        self._refuse(Refusal(408, "request body not received in time", "body_timeout"))

    def _refuse(self, refusal: Refusal) -> None:
        if self.transport.is_closing():
            return
        self.transport.write(refusal_response(refusal.status, refusal.reason))
        self._drop(refusal.metric)
        log.debug("%s: %s (%d)", self._peer(), refusal.reason, refusal.status)  # counted

    def _drop(self, metric: str) -> None:
        http_metrics.refused(metric).inc()
        self._cancel_timers()
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"


def bounded_protocol(limits: HttpLimits) -> type[BoundedHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, carrying ``limits``."""
    return type("BoundedHttpProtocol", (BoundedHttpProtocol,), {"limits": limits})
