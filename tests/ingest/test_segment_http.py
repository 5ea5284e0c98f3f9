"""Each answer of the Segment routes on the wire, as the SDKs read it.

A real server on loopback; Kafka is a port nothing listens on, so a call that gets
past every check is answered 503 (what an SDK retries), and none reaches a broker.
Both SDKs read ``code`` and ``message`` of an error body, and neither retries 400,
401, 403 or 413: each refusal here must be one of those, or carry Retry-After.
"""

from __future__ import annotations

import base64
import gzip
import select
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from services.ingest.app import create_app
from services.ingest.settings import IngestSettings
from shared.api_keys import format_line, key_digest
from tests.servers import serving

WRITE_KEY = "lf_segment-write-key"
CRM_KEY = "lf_crm"
READER_KEY = "lf_reader"
KEYS = ";".join(
    [
        format_line("segment", ["events:write"], key_digest(WRITE_KEY.encode())),
        format_line("crm", ["events:write", "crm:write"], key_digest(CRM_KEY.encode())),
        format_line("reader", ["leads:read"], key_digest(READER_KEY.encode())),
    ]
)
TRACK = {"userId": "ada@example.com", "event": "Email Opened", "messageId": "m-1"}


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def serve(**options: Any) -> Iterator[httpx.Client]:
    settings = IngestSettings(
        kafka_bootstrap_servers="127.0.0.1:1",
        api_keys=KEYS,
        publish_timeout_seconds=0.5,
        **options,
    )
    with serving(create_app(settings)) as url, httpx.Client(base_url=url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def ingest() -> Iterator[httpx.Client]:
    yield from serve()


def refusal(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["success"] is False
    assert body["code"] == code
    assert isinstance(body["message"], str)
    assert body["message"]
    return body


def test_no_key_an_unknown_key_and_a_key_without_the_scope(ingest: httpx.Client) -> None:
    refusal(ingest.post("/v1/track", json=TRACK), 401, "unauthorized")
    unknown = refusal(
        ingest.post("/v1/track", json=TRACK, headers=basic("lf_nope")), 401, "unauthorized"
    )
    assert "lf_nope" not in str(unknown)
    refusal(ingest.post("/v1/identify", json=TRACK, headers=basic(READER_KEY)), 403, "forbidden")
    # a track named as a CRM event needs crm:write, as on the native routes
    crm = {**TRACK, "event": "deal.won"}
    body = refusal(ingest.post("/v1/track", json=crm, headers=basic(WRITE_KEY)), 403, "forbidden")
    assert "crm:write" in body["message"]
    assert ingest.post("/v1/track", json=crm, headers=basic(CRM_KEY)).status_code == 503


def test_invalid_json_gzip_and_calls_are_400(ingest: httpx.Client) -> None:
    auth = basic(WRITE_KEY)
    refusal(ingest.post("/v1/track", content=b"{nope", headers=auth), 400, "invalid_json")
    bad_gzip = {**auth, "Content-Encoding": "gzip"}
    refusal(ingest.post("/v1/batch", content=b"plain", headers=bad_gzip), 400, "invalid_gzip")
    body = refusal(
        ingest.post("/v1/track", json={"event": "x"}, headers=auth), 400, "invalid_request"
    )
    assert body["detail"][0]["loc"] == ["body", "userId"]
    batch = {"batch": [{**TRACK, "type": "track"}, {"type": "page"}]}
    body = refusal(ingest.post("/v1/batch", json=batch, headers=auth), 400, "invalid_request")
    assert body["detail"][0]["loc"][:3] == ["body", "batch", 1]


def test_unsupported_encoding_and_content_type_are_415(ingest: httpx.Client) -> None:
    auth = basic(WRITE_KEY)
    br = {**auth, "Content-Encoding": "br"}
    refusal(ingest.post("/v1/track", json=TRACK, headers=br), 415, "unsupported_encoding")
    xml = {**auth, "Content-Type": "application/xml"}
    refusal(ingest.post("/v1/track", content=b"<a/>", headers=xml), 415, "unsupported_media_type")


def test_bodies_over_segment_s_limits_are_413(ingest: httpx.Client) -> None:
    auth = basic(WRITE_KEY)
    big = {**TRACK, "properties": {"blob": "x" * 33_000}}
    refusal(ingest.post("/v1/track", json=big, headers=auth), 413, "payload_too_large")
    batch = {"batch": [{**TRACK, "type": "track", "properties": {"b": "x" * 30_000}}] * 20}
    refusal(ingest.post("/v1/batch", json=batch, headers=auth), 413, "payload_too_large")


def send_until_answered(raw: socket.socket, body: bytes) -> None:
    """``body`` in chunks, stopping once the server has answered or closed."""
    try:
        for start in range(0, len(body), 8192):
            if select.select([raw], [], [], 0)[0]:
                return
            piece = body[start : start + 8192]
            raw.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
        raw.sendall(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        return  # the answer may still be in our receive buffer


def read_response(raw: socket.socket) -> bytes:
    """One response, read up to its Content-Length: the server may reset the connection
    after it (the rest of the bomb unread), which must not lose what was already read."""
    answer = b""
    while b"\r\n\r\n" not in answer or len(answer) < _expected_length(answer):
        chunk = raw.recv(65536)
        assert chunk, f"the connection closed mid-answer: {answer[:200]!r}"
        answer += chunk
    return answer


def _expected_length(answer: bytes) -> int:
    head, _, _ = answer.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(answer) + 1


def test_a_gzip_bomb_is_refused_while_it_streams(ingest: httpx.Client) -> None:
    """50 MB of zeros in 50 KB of gzip, sent chunked: refused by what it inflates to."""
    bomb = gzip.compress(b"\0" * 50_000_000)
    host, port = ingest.base_url.host, ingest.base_url.port
    assert port is not None
    auth = basic(WRITE_KEY)["Authorization"]
    head = (
        f"POST /v1/batch HTTP/1.1\r\nHost: {host}\r\nAuthorization: {auth}\r\n"
        "Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
        "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(head)
        send_until_answered(raw, bomb)
        answer = read_response(raw)
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 413"), answer[:200]
    body = orjson.loads(rest.partition(b"\r\n\r\n")[2])
    assert body["code"] == "payload_too_large"


def test_kafka_not_confirming_is_503_with_retry_after(ingest: httpx.Client) -> None:
    gzipped = gzip.compress(orjson.dumps({"batch": [{**TRACK, "type": "track"}]}))
    headers = {**basic(WRITE_KEY), "Content-Encoding": "gzip", "Content-Type": "application/json"}
    response = ingest.post("/v1/batch", content=gzipped, headers=headers)
    refusal(response, 503, "unavailable")
    assert int(response.headers["Retry-After"]) >= 1


def test_over_the_rate_limit_is_429_with_retry_after() -> None:
    for ingest in serve(rate_limit_per_second=0.01, rate_limit_burst=1):
        ingest.post("/v1/track", json=TRACK, headers=basic(WRITE_KEY))
        response = ingest.post("/v1/track", json=TRACK, headers=basic(WRITE_KEY))
        refusal(response, 429, "rate_limited")
        assert int(response.headers["Retry-After"]) >= 1


def test_the_routes_are_in_the_openapi_document(ingest: httpx.Client) -> None:
    paths = ingest.get("/openapi.json").json()["paths"]
    for kind in ("track", "identify", "page", "screen", "group", "alias", "batch"):
        assert set(paths[f"/v1/{kind}"]["post"]["responses"]) >= {"200", "400", "413", "503"}


def test_a_cloudevent_in_binary_mode_without_content_type_is_not_415(
    ingest: httpx.Client,
) -> None:
    """As the CNCF SDK sends one whose datacontenttype is unset: decoded, authorised, and
    only then refused for want of Kafka."""
    headers = {
        "ce-specversion": "1.0",
        "ce-id": "ce%201",
        "ce-type": "form.submitted",
        "ce-source": "/forms",
        "ce-subject": "Ada%40Example.com",
        "ce-time": "2026-11-20T10:00:00Z",
        "X-API-Key": WRITE_KEY,
    }
    response = ingest.post("/v1/events", content=b'{"form": "contact"}', headers=headers)
    assert response.status_code == 503, response.text
