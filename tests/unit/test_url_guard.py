"""The outbound URL guard: what Tollgate may call, checked on the URL text and again at connect time."""

from __future__ import annotations

import asyncio
import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.openai_upstream import OpenAIUpstream
from tollgate.errors import InvalidRequestError, UpstreamError
from tollgate.providers.http import (
    ForbiddenUpstreamAddressError,
    GuardedResolver,
    HttpClient,
    check_resolved_url,
    check_upstream_url,
)

STRICT = {"allow_loopback": False, "allow_private": False}
LOCAL = {"allow_loopback": True, "allow_private": True}


def allowed(url: str, policy: dict[str, bool]) -> bool:
    """Whether the guard lets ``url`` through; a refusal must be a 400 about ``base_url``."""
    refusal: InvalidRequestError | None = None
    try:
        check_upstream_url(url, **policy)
    except InvalidRequestError as error:
        refusal = error
    if refusal is None:
        return True
    assert (refusal.status, refusal.param) == (400, "base_url")
    return False


PUBLIC = [
    "https://api.openai.com/v1",
    "https://api.deepseek.com/v1",
    "https://ark.cn-beijing.volces.com/api/v3",
    "http://203.0.114.1:8080/v1",
    "https://1.1.1.1/v1",
    "https://[2606:4700:4700::1111]/v1",
    "https://xn--n3h.example/v1",
    "http://ollama:11434/v1",  # a name: its addresses are checked when connecting
]

# Refused whatever the operator allows.
ALWAYS_REFUSED = [
    "ftp://api.example.com/",  # not http(s)
    "file:///etc/passwd",
    "gopher://api.example.com/",
    "https:///v1",  # no host
    "https://user:pass@api.example.com/v1",  # credentials in the URL
    "https://user@api.example.com/v1",
    "https://@api.example.com/v1",
    "https://api.example.com\\@169.254.169.254/",  # a parser-confusion spelling
    "https://api.exa mple.com/",
    "http://169.254.169.254/latest/meta-data/",  # metadata
    "http://169.254.170.2/v2/credentials",  # ECS task credentials
    "http://[fd00:ec2::254]/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://METADATA.google.internal./",
    "http://100.100.100.200/",  # Alibaba Cloud metadata, inside CGNAT space
    "http://169.254.1.1/",  # link-local
    "http://[fe80::1]/",
    "http://[fe80::1%25eth0]/",
    "http://0.0.0.0:8080/",  # unspecified
    "http://0/",
    "http://[::]/",
    "http://224.0.0.1/",  # multicast
    "http://[ff02::1]/",
    "http://240.0.0.1/",  # reserved
    "http://255.255.255.255/",
    "http://192.0.2.10/",  # documentation
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",  # NAT64
    "http://[2002:a9fe:a9fe::1]/",  # 6to4
    "http://2852039166/",  # 169.254.169.254 as one decimal number
    "http://0xa9fea9fe/",  # ...in hex
    "http://0251.0376.0251.0376/",  # ...in octal
    "http://134744072/",  # 8.8.8.8: a public address, but not in dotted-decimal form
    "http://%6c%6fcalhost/",  # percent-encoded host names are not host names
]

LOOPBACK = [
    "http://127.0.0.1:11434/v1",
    "http://127.8.9.10/",
    "http://localhost:8080/v1",
    "http://LOCALHOST./v1",
    "http://api.localhost/v1",
    "http://[::1]:11434/v1",
    "http://[::ffff:127.0.0.1]/",
]
LOOPBACK_SPELLINGS = ["http://2130706433/", "http://0x7f000001/", "http://0177.0.0.1/", "http://127.1/"]

PRIVATE = [
    "http://10.0.0.5/v1",
    "http://172.16.0.1/",
    "http://172.31.255.254/",
    "http://192.168.1.20:8000/v1",
    "http://100.64.0.1/",  # CGNAT
    "http://[fc00::1]/",
    "http://[fd12:3456::1]/",
    "http://[::ffff:10.0.0.1]/",
]


@pytest.mark.parametrize("url", PUBLIC)
def test_public_provider_urls_are_allowed(url: str) -> None:
    assert allowed(url, STRICT)
    assert allowed(url, LOCAL)


@pytest.mark.parametrize("url", ALWAYS_REFUSED)
def test_some_urls_are_refused_whatever_the_policy(url: str) -> None:
    assert not allowed(url, STRICT)
    assert not allowed(url, LOCAL)


@pytest.mark.parametrize("url", LOOPBACK)
def test_loopback_is_refused_unless_allowed(url: str) -> None:
    assert not allowed(url, STRICT)
    assert not allowed(url, {"allow_loopback": False, "allow_private": True})
    assert allowed(url, {"allow_loopback": True, "allow_private": False})


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
def test_integer_spellings_of_loopback_are_recognised(url: str) -> None:
    with pytest.raises(InvalidRequestError, match="loopback"):
        check_upstream_url(url, **STRICT)
    assert not allowed(url, LOCAL)  # still refused: only dotted-decimal is accepted


@pytest.mark.parametrize("url", PRIVATE)
def test_private_ranges_are_refused_unless_allowed(url: str) -> None:
    assert not allowed(url, STRICT)
    assert not allowed(url, {"allow_loopback": True, "allow_private": False})
    assert allowed(url, {"allow_loopback": False, "allow_private": True})


def test_the_refusal_never_echoes_the_url() -> None:
    url = "http://169.254.169.254/latest?token=secret-token"
    with pytest.raises(InvalidRequestError) as refusal:
        check_upstream_url(url, **LOCAL)
    assert "secret-token" not in refusal.value.message
    assert "169.254" not in refusal.value.message


@given(st.ip_addresses(v=4))
def test_ipv4_mapped_ipv6_is_judged_like_its_ipv4(address: ipaddress.IPv4Address) -> None:
    for policy in (STRICT, LOCAL):
        assert allowed(f"http://[::ffff:{address}]/", policy) == allowed(f"http://{address}/", policy)


@given(st.ip_addresses(v=4))
def test_an_integer_ipv4_spelling_is_never_allowed(address: ipaddress.IPv4Address) -> None:
    assert not allowed(f"http://{int(address)}/", LOCAL)
    assert not allowed(f"http://{hex(int(address))}/", LOCAL)


# -- At connect time -------------------------------------------------------------------------


class StaticResolver:
    """DNS as a test wants it: every name resolves to the given addresses."""

    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return list(self.addresses)


@pytest.mark.parametrize(
    "addresses",
    [("169.254.169.254",), ("93.184.216.34", "169.254.169.254"), ("::ffff:169.254.169.254",), ("10.0.0.1",)],
)
def test_the_resolver_refuses_a_name_that_resolves_to_a_forbidden_address(addresses: tuple[str, ...]) -> None:
    resolver = GuardedResolver(allow_loopback=True, allow_private=False, inner=StaticResolver(*addresses))

    with pytest.raises(ForbiddenUpstreamAddressError):
        asyncio.run(resolver.resolve("innocent.example", 443))


def test_the_resolver_passes_allowed_addresses_on() -> None:
    resolver = GuardedResolver(
        allow_loopback=False, allow_private=False, inner=StaticResolver("93.184.216.34")
    )

    assert asyncio.run(resolver.resolve("api.example.com", 443)) == ["93.184.216.34"]


def test_the_resolver_refuses_a_forbidden_name_without_resolving_it() -> None:
    inner = StaticResolver("93.184.216.34")
    resolver = GuardedResolver(allow_loopback=False, allow_private=False, inner=inner)

    with pytest.raises(ForbiddenUpstreamAddressError):
        asyncio.run(resolver.resolve("metadata.google.internal", 80))
    assert inner.asked == []


def test_only_checked_answers_are_cached() -> None:
    inner = StaticResolver("169.254.169.254")
    resolver = GuardedResolver(allow_loopback=True, allow_private=True, inner=inner, cache_seconds=60)

    for _ in range(2):  # a refusal is not remembered as an answer: asked again, refused again
        with pytest.raises(ForbiddenUpstreamAddressError):
            asyncio.run(resolver.resolve("rebound.example", 443))
    inner.addresses = ("93.184.216.34",)
    assert asyncio.run(resolver.resolve("rebound.example", 443)) == ["93.184.216.34"]
    inner.addresses = ("169.254.169.254",)
    assert asyncio.run(resolver.resolve("rebound.example", 443)) == ["93.184.216.34"]  # cached, checked
    assert inner.asked == ["rebound.example"] * 3


async def _post_through(client: HttpClient, url: str) -> int:
    try:
        async with client.post(url, b"{}", headers={}, provider="loopback") as response:
            return response.status
    finally:
        await client.close()


def test_dns_rebinding_to_a_forbidden_address_is_refused_when_connecting() -> None:
    async def scenario() -> None:
        async with OpenAIUpstream(api_key=None) as upstream:
            url = f"http://rebound.example:{upstream.port}/v1/chat/completions"
            # Both pass the URL text check (a name); only what the name resolves to differs.
            strict = HttpClient(allow_loopback=False, resolver=StaticResolver("127.0.0.1"))
            relaxed = HttpClient(allow_loopback=True, resolver=StaticResolver("127.0.0.1"))

            with pytest.raises(UpstreamError) as refused:
                await _post_through(strict, url)
            assert refused.value.code == "upstream_address_forbidden"
            assert upstream.requests == []
            assert await _post_through(relaxed, url) != 0  # the same server, when the policy allows it
            assert len(upstream.requests) == 1

    asyncio.run(scenario())


def test_the_connection_goes_to_the_checked_address() -> None:
    """The name is not resolved a second time by the socket layer: no window for rebinding."""

    async def scenario() -> None:
        async with OpenAIUpstream(api_key=None) as upstream:
            # "rebound.example" does not exist: only the checked answer can reach the server.
            client = HttpClient(allow_loopback=True, resolver=StaticResolver("127.0.0.1"))
            assert await _post_through(client, f"http://rebound.example:{upstream.port}/v1/chat/completions")
            assert upstream.requests[0].headers["Host"] == f"rebound.example:{upstream.port}"

    asyncio.run(scenario())


def test_the_client_refuses_an_ip_literal_the_resolver_never_sees() -> None:
    async def scenario() -> None:
        async with OpenAIUpstream(api_key=None) as upstream:
            client = HttpClient(allow_loopback=False)
            try:
                with pytest.raises(UpstreamError) as refused:
                    async with client.post(
                        f"{upstream.base_url}/chat/completions", b"{}", headers={}, provider="loopback"
                    ):
                        pass
            finally:
                await client.close()
            assert refused.value.code == "upstream_address_forbidden"
            assert refused.value.status == 502
            assert upstream.requests == []

    asyncio.run(scenario())


# -- For clients that resolve names themselves (botocore, for Bedrock) ---------------------------


def _resolving_to(*addresses: str):  # type: ignore[no-untyped-def]
    def resolve(host: str, port: object, **_: object) -> list[tuple[object, ...]]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, 0, 0, "", (a, 0)) for a in addresses]

    return resolve


@pytest.mark.parametrize(
    "addresses",
    [
        ("169.254.169.254",),
        ("fd00:ec2::254",),
        ("93.184.216.34", "10.0.0.7"),
        ("127.0.0.1",),
        ("::ffff:169.254.169.254",),
    ],
)
def test_a_resolved_forbidden_address_is_refused_before_sending(addresses: tuple[str, ...]) -> None:
    with pytest.raises(UpstreamError) as refused:
        check_resolved_url("https://bedrock.example", "b", resolve=_resolving_to(*addresses), **STRICT)

    assert refused.value.code == "upstream_address_forbidden"
    assert "169.254" not in refused.value.message and "bedrock.example" not in refused.value.message


def test_a_resolved_public_address_passes_and_an_unresolvable_name_does_not() -> None:
    check_resolved_url("https://bedrock.example", "b", resolve=_resolving_to("93.184.216.34"), **STRICT)

    def nowhere(*_: object, **__: object) -> list[tuple[object, ...]]:
        raise socket.gaierror("no such name")

    with pytest.raises(UpstreamError) as refused:
        check_resolved_url("https://bedrock.example", "b", resolve=nowhere, **STRICT)
    assert refused.value.code == "upstream_unreachable"


def test_the_text_is_checked_before_any_lookup() -> None:
    def never(*_: object, **__: object) -> list[tuple[object, ...]]:
        raise AssertionError("resolved a URL whose text is refused")

    with pytest.raises(UpstreamError):
        check_resolved_url("http://169.254.169.254/", "b", resolve=never, **LOCAL)
