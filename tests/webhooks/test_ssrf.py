from __future__ import annotations

import ipaddress

import pytest

from services.webhooks.destinations import resolve
from services.webhooks.ssrf import Policy, UnsafeUrl, checked, parse_networks, refusal, target

STRICT = Policy.of(False, [])


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("172.16.5.5", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("169.254.1.1", "link-local"),
        ("::1", "loopback"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("::ffff:127.0.0.1", "IPv4-mapped"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "public"),
        ("240.0.0.1", "a private"),
    ],
)
def test_non_public_addresses_are_refused(address: str, reason: str) -> None:
    found = refusal(ipaddress.ip_address(address), STRICT)
    assert found is not None
    assert reason in found


def test_public_addresses_pass_and_the_allow_list_opens_the_rest() -> None:
    assert refusal(ipaddress.ip_address("93.184.216.34"), STRICT) is None
    allowing = Policy.of(False, ["127.0.0.0/8", "10.0.0.0/8"])
    assert refusal(ipaddress.ip_address("127.0.0.1"), allowing) is None
    assert refusal(ipaddress.ip_address("10.9.9.9"), allowing) is None
    assert refusal(ipaddress.ip_address("192.168.0.1"), allowing) is not None


def test_every_resolved_address_must_pass() -> None:
    with pytest.raises(UnsafeUrl, match="private"):
        checked(["93.184.216.34", "10.0.0.1"], STRICT)
    assert str(checked(["93.184.216.34"], STRICT)) == "93.184.216.34"


def test_https_is_required_unless_http_is_allowed() -> None:
    with pytest.raises(UnsafeUrl, match="https"):
        target("http://crm.example.com/hook", STRICT)
    assert target("http://crm.example.com/hook", Policy.of(True, [])).port == 80
    assert target("https://crm.example.com:8443/x", STRICT).port == 8443
    with pytest.raises(UnsafeUrl, match="user"):
        target("https://a:b@crm.example.com/", STRICT)
    with pytest.raises(UnsafeUrl, match="https"):
        target("ftp://crm.example.com/", STRICT)


def test_the_allow_list_setting_names_a_bad_network() -> None:
    assert parse_networks(" 127.0.0.1/32, ::1/128 ,") == ["127.0.0.1/32", "::1/128"]
    with pytest.raises(ValueError, match=r"'10\.0\.0\.0/33'"):
        parse_networks("10.0.0.0/33")


async def test_a_delivery_goes_to_the_checked_address_under_the_urls_name() -> None:
    allowing = Policy.of(True, ["127.0.0.0/8", "::1/128"])
    pinned = await resolve("http://localhost:8080/hook?x=1", allowing)
    assert str(pinned.url) == "http://127.0.0.1:8080/hook?x=1"
    assert (pinned.host_header, pinned.server_name) == ("localhost:8080", "localhost")
    assert (await resolve("http://[::1]:9/x", allowing)).host_header == "[::1]:9"
    with pytest.raises(UnsafeUrl, match="loopback"):
        await resolve("http://localhost:8080/hook", Policy.of(True, []))
