"""The HTTP server's bounds, probed with raw sockets against a real uvicorn on loopback.

Each limit is set small, so a refusal shows quickly; every wait is a socket deadline.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, suppress
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import REGISTRY

from shared.settings import LeadflowSettings
from tests.servers import serving

LIMITS = LeadflowSettings(
    http_max_header_bytes=4096,
    http_max_headers=20,
    http_header_timeout_seconds=0.5,
    http_body_timeout_seconds=0.5,
    http_max_connections=8,
    http_keepalive_timeout_seconds=1,
)
DEADLINE = 10.0
"""Longest any answer may take to arrive: far above every timeout above."""


def echo_app() -> FastAPI:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> PlainTextResponse:
        return PlainTextResponse(f"{len(await request.body())} bytes")

    @app.get("/ok")
    async def ok() -> PlainTextResponse:
        return PlainTextResponse("ok")

    return app


@pytest.fixture(scope="module")
def address() -> Iterator[tuple[str, int]]:
    with serving(echo_app(), settings=LIMITS) as url:
        parts = urlsplit(url)
        assert parts.hostname is not None
        assert parts.port is not None
        yield parts.hostname, parts.port


def connect(address: tuple[str, int]) -> socket.socket:
    sock = socket.create_connection(address, timeout=DEADLINE)
    sock.settimeout(DEADLINE)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a timeout if it keeps the connection."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def send_ignoring_reset(sock: socket.socket, data: bytes) -> None:
    """The server may close before it read all of ``data``; that is its right."""
    with suppress(BrokenPipeError, ConnectionResetError):
        sock.sendall(data)


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


def refused(sock: socket.socket) -> bytes:
    """The answer before the server closed; a reset (it closed with unread input) is b''."""
    try:
        return read_until_closed(sock)
    except ConnectionResetError:
        return b""


def test_a_normal_request_is_served_and_kept_alive(address: tuple[str, int]) -> None:
    with connect(address) as sock:
        for _ in range(3):
            sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(65536).startswith(b"HTTP/1.1 200")
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
        assert sock.recv(65536).endswith(b"5 bytes")


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    address: tuple[str, int],
) -> None:
    with connect(address) as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.count(b"HTTP/1.1") == 1  # closed without a word once idle


def test_headers_just_under_the_limit_and_a_body_in_the_same_read_are_served(
    address: tuple[str, int],
) -> None:
    padding = b"a" * (LIMITS.http_max_header_bytes - 200)
    body = b"x" * 100_000
    head = b"POST /echo HTTP/1.1\r\nHost: x\r\nX-Pad: %b\r\nContent-Length: %d\r\n" % (
        padding,
        len(body),
    )
    with connect(address) as sock:
        sock.sendall(head + b"Connection: close\r\n\r\n" + body)
        assert read_until_closed(sock).endswith(b"100000 bytes")


def test_many_pipelined_requests_are_not_mistaken_for_one_large_header(
    address: tuple[str, int],
) -> None:
    request = b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
    count = 5 * LIMITS.http_max_header_bytes // len(request)
    with connect(address) as sock:
        sock.sendall(request * (count - 1) + request.replace(b"Host", b"Connection: close\r\nHost"))
        assert read_until_closed(sock).count(b"HTTP/1.1 200") == count


def test_an_oversized_header_gets_431_and_the_connection_closed(address: tuple[str, int]) -> None:
    with connect(address) as sock:
        big = b"v" * (2 * LIMITS.http_max_header_bytes)
        send_ignoring_reset(sock, b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: " + big + b"\r\n\r\n")
        answer = refused(sock)
    assert answer == b"" or status_of(answer) == 431


def test_an_unfinished_huge_header_is_cut_at_the_limit(address: tuple[str, int]) -> None:
    with connect(address) as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(64):  # 4 MiB at most, never the end of the header
            try:
                sock.sendall(b"v" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = refused(sock)
    assert answer == b"" or status_of(answer) == 431


def refusals(reason: str) -> float:
    value = REGISTRY.get_sample_value("leadflow_http_connections_refused_total", {"reason": reason})
    return value or 0.0


def test_a_thousand_headers_are_refused_and_counted(address: tuple[str, int]) -> None:
    before = refusals("too_many_headers")
    headers = b"".join(b"h%d: 1\r\n" % i for i in range(1000))
    with connect(address) as sock:
        send_ignoring_reset(sock, b"GET /ok HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
        answer = refused(sock)
    assert answer == b"" or status_of(answer) == 431
    assert refusals("too_many_headers") == before + 1


def test_the_most_headers_allowed_are_served(address: tuple[str, int]) -> None:
    headers = b"".join(b"h%d: 1\r\n" % i for i in range(LIMITS.http_max_headers - 2))
    with connect(address) as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + headers + b"\r\n")
        assert status_of(read_until_closed(sock)) == 200


def test_unfinished_headers_are_closed_after_the_header_timeout(address: tuple[str, int]) -> None:
    with connect(address) as sock:
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n")
        assert status_of(read_until_closed(sock)) == 408


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    address: tuple[str, int],
) -> None:
    before = refusals("idle_timeout")
    with connect(address) as sock:
        assert read_until_closed(sock) == b""
    assert refusals("idle_timeout") == before + 1


def test_a_trickled_body_is_cut_with_408_after_the_body_timeout(address: tuple[str, int]) -> None:
    with connect(address) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        answer = read_until_closed(sock)
    assert status_of(answer) == 408
    assert answer.count(b"HTTP/1.1") == 1  # the app's answer, if any, went nowhere
    assert answer.endswith(b'{"detail":"request body not received in time"}')


def test_connections_beyond_the_limit_are_refused_with_503(address: tuple[str, int]) -> None:
    with ExitStack() as stack:
        held = [stack.enter_context(connect(address)) for _ in range(LIMITS.http_max_connections)]
        for sock in held:  # each is accepted and parked mid-headers
            sock.sendall(b"GET /ok HTTP/1.1\r\n")
        extra = stack.enter_context(connect(address))
        send_ignoring_reset(extra, b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = refused(extra)
        assert answer == b"" or status_of(answer) == 503
    assert served_again(address)


def served_again(address: tuple[str, int]) -> bool:
    """Once held connections are closed, a new one is served (when the server saw them go)."""
    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        with connect(address) as sock:
            send_ignoring_reset(sock, b"GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = refused(sock)
        if answer and status_of(answer) == 200:
            return True
    return False


def test_an_upgrade_request_is_served_as_plain_http(address: tuple[str, int]) -> None:
    with connect(address) as sock:
        upgrade = b"Connection: Upgrade, close\r\nUpgrade: websocket\r\n"
        sock.sendall(b"GET /ok HTTP/1.1\r\nHost: x\r\n" + upgrade + b"\r\n")
        assert status_of(read_until_closed(sock)) == 200
