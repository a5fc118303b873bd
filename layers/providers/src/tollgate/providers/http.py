"""The process-wide upstream HTTP client and the outbound URL guard.

One pool of keep-alive connections per provider origin (``tollgate.http1``), created on first use
inside the running event loop (never at import) and recreated if the loop changed. Every adapter
that speaks HTTP shares it through ``HttpClient``::

    client = HttpClient(allow_loopback=False, allow_private=False, connect_timeout=10, read_timeout=300)
    async with client.post(url, body, headers=headers, provider="openai") as response:
        ...
    await client.close()  # at shutdown

Outbound URLs are checked twice. ``check_upstream_url`` is a pure check of the URL text (run when
an admin saves a base URL, and again, cached, before each request). ``GuardedResolver`` checks the
host and every address it resolves to each time a connection is made, and the connection is made
to the address it checked, so a name that later resolves to the metadata endpoint (DNS rebinding)
is refused. Redirects are never followed; a 3xx from a provider is an error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from urllib.parse import quote, urlsplit

import yarl

from tollgate.errors import InvalidRequestError, TollgateError, UpstreamError, UpstreamTimeoutError
from tollgate.http1 import ConnectError, Origin, Resolver, StreamedResponse, SystemResolver

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ForbiddenUpstreamAddressError",
    "GuardedResolver",
    "HttpClient",
    "UpstreamResponse",
    "address_problem",
    "check_resolved_url",
    "check_upstream_url",
    "translate_transport_error",
]

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

# -- The outbound URL guard ------------------------------------------------------------------

_LOOPBACK_HINT = "set TOLLGATE_ALLOW_LOOPBACK_UPSTREAMS=true to allow them"
_PRIVATE_HINT = "set TOLLGATE_ALLOW_PRIVATE_UPSTREAMS=true to allow them"

_METADATA_ADDRESSES: Final = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack instance metadata
        "169.254.170.2",  # ECS task metadata and credentials
        "fd00:ec2::254",  # AWS instance metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud metadata (inside 100.64/10)
    )
)
_METADATA_HOSTNAMES: Final = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data", "instance-data.ec2.internal"}
)


def _networks(*cidrs: str) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(cidr) for cidr in cidrs)


# Explicit tables rather than ``ip.is_private`` and friends, whose meaning changed between
# Python releases.
_UNSPECIFIED: Final = _networks("0.0.0.0/8", "::/128")
_LINK_LOCAL: Final = _networks("169.254.0.0/16", "fe80::/10")
_MULTICAST: Final = _networks("224.0.0.0/4", "ff00::/8")
_RESERVED: Final = _networks(
    "240.0.0.0/4",  # reserved, and 255.255.255.255 broadcast
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24",  # documentation
    "198.51.100.0/24",  # documentation
    "203.0.113.0/24",  # documentation
    "198.18.0.0/15",  # benchmarking
    "100::/64",  # discard-only
    "2001:db8::/32",  # documentation
)
_LOOPBACK: Final = _networks("127.0.0.0/8", "::1/128")
_PRIVATE: Final = _networks(
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",  # carrier-grade NAT
    "fc00::/7",  # unique local
    "fec0::/10",  # deprecated site-local
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")
_IPV4_COMPATIBLE: Final = ipaddress.ip_network("::/96")

# Host spellings that resolvers read as IPv4 although they are not dotted quads:
# 2130706433, 0x7f000001, 0177.0.0.1, 127.1.
_LEGACY_IPV4: Final = re.compile(r"(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}", re.IGNORECASE)
_HOSTNAME: Final = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: mapped, NAT64, 6to4 or IPv4-compatible."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64 or (ip in _IPV4_COMPATIBLE and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_problem(ip: IPAddress, *, allow_loopback: bool, allow_private: bool) -> str | None:
    """Why Tollgate must not connect to ``ip``, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(int(ip))  # fe80::1%eth0 is still fe80::1
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return address_problem(embedded, allow_loopback=allow_loopback, allow_private=allow_private)
    if ip in _METADATA_ADDRESSES:
        return "cloud metadata endpoints are not allowed"
    if any(ip in net for net in _LINK_LOCAL):
        return "link-local addresses are not allowed"
    if any(ip in net for net in _UNSPECIFIED):
        return "the unspecified address is not allowed"
    if any(ip in net for net in _MULTICAST):
        return "multicast addresses are not allowed"
    if any(ip in net for net in _RESERVED):
        return "reserved addresses are not allowed"
    if not allow_loopback and any(ip in net for net in _LOOPBACK):
        return f"loopback addresses are not allowed ({_LOOPBACK_HINT})"
    if not allow_private and any(ip in net for net in _PRIVATE):
        return f"private network addresses are not allowed ({_PRIVATE_HINT})"
    return None


def _host_problem(host: str, *, allow_loopback: bool, allow_private: bool) -> str | None:
    """Why a URL's host (a name or an IP literal, as yarl decoded it) is refused, or None."""
    name = host.lower().rstrip(".")
    if not name:
        return "base_url must name a host"
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        return address_problem(ip, allow_loopback=allow_loopback, allow_private=allow_private)
    if _LEGACY_IPV4.fullmatch(name):
        try:
            packed = socket.inet_aton(name)
        except OSError:
            return "base_url has an invalid IPv4 address"
        legacy = ipaddress.IPv4Address(packed)
        problem = address_problem(legacy, allow_loopback=allow_loopback, allow_private=allow_private)
        return problem or "IPv4 addresses must be written as four decimal numbers, such as 203.0.113.7"
    try:
        name = name.encode("idna").decode("ascii")
    except UnicodeError:
        return "base_url has an invalid host name"
    if not _HOSTNAME.fullmatch(name) or ".." in name:
        return "base_url has an invalid host name"
    if name in _METADATA_HOSTNAMES:
        return "cloud metadata endpoints are not allowed"
    if not allow_loopback and (name == "localhost" or name.endswith(".localhost")):
        return f"loopback addresses are not allowed ({_LOOPBACK_HINT})"
    return None


def check_upstream_url(url: str, *, allow_loopback: bool, allow_private: bool) -> None:
    """Refuses a provider base URL Tollgate must not call; raises ``InvalidRequestError`` (param
    ``base_url``). Checks the text only: the resolver checks what a name resolves to.

    >>> check_upstream_url("https://api.openai.com/v1", allow_loopback=False, allow_private=False)
    >>> check_upstream_url("http://169.254.169.254/", allow_loopback=True, allow_private=True)
    Traceback (most recent call last):
    tollgate.errors.InvalidRequestError: cloud metadata endpoints are not allowed
    """
    if any(ch in url for ch in "\\\t\r\n ") or not url.isprintable():
        raise InvalidRequestError(
            "base_url must not contain spaces, control characters or backslashes", param="base_url"
        )
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError):
        raise InvalidRequestError("base_url is not a valid URL", param="base_url") from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidRequestError("base_url must use http or https", param="base_url")
    # yarl drops an empty userinfo ("http://@host"); the raw authority still shows it.
    if parsed.raw_user is not None or parsed.raw_password is not None or "@" in urlsplit(url).netloc:
        raise InvalidRequestError("base_url must not contain credentials", param="base_url")
    if not parsed.host:
        raise InvalidRequestError("base_url must name a host", param="base_url")
    problem = _host_problem(parsed.host, allow_loopback=allow_loopback, allow_private=allow_private)
    if problem is not None:
        raise InvalidRequestError(problem, param="base_url")


def check_resolved_url(
    url: str,
    provider: str,
    *,
    allow_loopback: bool,
    allow_private: bool,
    resolve: Callable[..., list[Any]] | None = None,
) -> None:
    """The connect-time check for a client that resolves names itself: the URL's text, then every
    address its host resolves to now. (That client resolves again when it connects; the window
    between the two lookups is what this cannot close, unlike ``GuardedResolver``.)"""

    def refused(problem: str) -> UpstreamError:
        return UpstreamError(
            f"The configured address of provider '{provider}' is not allowed: {problem}.",
            code="upstream_address_forbidden",
        )

    try:
        check_upstream_url(url, allow_loopback=allow_loopback, allow_private=allow_private)
    except InvalidRequestError as error:
        raise refused(error.message) from None
    host = yarl.URL(url).host or ""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return  # an IP literal: checked above
    try:
        found = (resolve or socket.getaddrinfo)(host, None, proto=socket.IPPROTO_TCP)
        addresses = {entry[4][0] for entry in found}
    except OSError:
        # Refused rather than waved through: a name that fails here may resolve for the client next.
        raise UpstreamError(
            f"Tollgate could not resolve the provider '{provider}'.", code="upstream_unreachable"
        ) from None
    for address in addresses:
        try:
            ip = ipaddress.ip_address(str(address).split("%", 1)[0])
        except ValueError:
            raise refused("the host resolved to an unreadable address") from None
        problem = address_problem(ip, allow_loopback=allow_loopback, allow_private=allow_private)
        if problem is not None:
            raise refused(problem)


class ForbiddenUpstreamAddressError(OSError):
    """A provider's host name resolved to an address Tollgate must not connect to."""


class GuardedResolver:
    """Resolves a provider's host through ``inner`` and refuses forbidden addresses.

    A name is refused if any of its addresses is forbidden: a name that mixes public and
    metadata addresses is an attack, not a configuration to work around. Checked answers are kept
    ``cache_seconds``; the connection is made to an address from the checked answer.
    """

    def __init__(
        self,
        *,
        allow_loopback: bool,
        allow_private: bool,
        inner: Resolver | None = None,
        cache_seconds: float = 0.0,
    ) -> None:
        self._allow_loopback = allow_loopback
        self._allow_private = allow_private
        self._inner: Resolver = inner if inner is not None else SystemResolver()
        self._cache_seconds = cache_seconds
        self._cache: dict[tuple[str, int], tuple[float, list[str]]] = {}

    async def resolve(self, host: str, port: int) -> list[str]:
        problem = _host_problem(host, allow_loopback=self._allow_loopback, allow_private=self._allow_private)
        if problem is not None:
            raise ForbiddenUpstreamAddressError(problem)
        cached = self._cache.get((host, port))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        addresses = await self._inner.resolve(host, port)
        for address in addresses:
            try:
                ip = ipaddress.ip_address(address.split("%", 1)[0])
            except ValueError:
                raise ForbiddenUpstreamAddressError("the host resolved to an unreadable address") from None
            problem = address_problem(
                ip, allow_loopback=self._allow_loopback, allow_private=self._allow_private
            )
            if problem is not None:
                raise ForbiddenUpstreamAddressError(problem)
        if self._cache_seconds > 0:
            if len(self._cache) >= 1024:
                self._cache.clear()
            self._cache[(host, port)] = (time.monotonic() + self._cache_seconds, addresses)
        return addresses


# -- Transport errors ----------------------------------------------------------------------


def translate_transport_error(exc: BaseException, provider: str) -> TollgateError:
    """A failed exchange with a provider as Tollgate's error. Messages name the provider only:
    never its URL (which may carry a key in its query) or the transport's text (which names the host).
    """
    if isinstance(exc, TimeoutError):
        return UpstreamTimeoutError(f"The provider '{provider}' did not answer in time.")
    if isinstance(exc, ConnectError):
        if isinstance(exc.__cause__, ForbiddenUpstreamAddressError):
            return UpstreamError(
                f"The configured address of provider '{provider}' is not allowed: {exc.__cause__}.",
                code="upstream_address_forbidden",
            )
        return UpstreamError(
            f"Tollgate could not connect to the provider '{provider}'.", code="upstream_unreachable"
        )
    if isinstance(exc, OSError):  # TransportError: lost, or a malformed answer
        return UpstreamError(
            f"The connection to the provider '{provider}' was lost mid-response.",
            code="upstream_disconnected",
        )
    return UpstreamError(f"The exchange with the provider '{provider}' failed.", code="upstream_unreachable")


# -- The client ------------------------------------------------------------------------------

_TRANSPORT_ERRORS = (OSError, TimeoutError)  # http1's TransportError is an OSError
#: The largest answer body read from a provider (generated images come back as base64).
MAX_ANSWER_BYTES = 256 * 1024 * 1024
#: Characters left as they are in a request path and query; others are percent-encoded.
_PATH_SAFE = "/%:@!$&'()*+,;=~"
_QUERY_SAFE = _PATH_SAFE + "?"

UpstreamResponse: TypeAlias = StreamedResponse


class HttpClient:
    """The process-wide HTTP client for providers: pooled per origin, guarded, never redirected.

    ``connect_timeout`` bounds getting a connection (pool wait, DNS, TCP and TLS);
    ``read_timeout`` is the longest wait for the next bytes of the answer, so a stream may run
    as long as it keeps sending (keep-alive comments count).
    """

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        allow_private: bool = False,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        limit_per_host: int = 128,
        dns_cache_seconds: int = 30,
        keepalive_seconds: float = 30.0,
        user_agent: str = "tollgate",
        resolver: Resolver | None = None,
    ) -> None:
        self.allow_loopback = allow_loopback
        self.allow_private = allow_private
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._limit_per_host = limit_per_host
        self._keepalive_seconds = keepalive_seconds
        self._user_agent = user_agent
        #: Checks every host and address before a connection is made (and caches checked answers).
        self._resolver = GuardedResolver(
            allow_loopback=allow_loopback,
            allow_private=allow_private,
            inner=resolver,
            cache_seconds=dns_cache_seconds,
        )
        self._origins: dict[tuple[str, str, int], Origin] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checked_urls: dict[str, str | None] = {}
        self._targets: dict[str, tuple[tuple[str, str, int], str]] = {}

    def check_url(self, url: str) -> None:
        """``check_upstream_url`` under this client's policy (raises ``InvalidRequestError``)."""
        check_upstream_url(url, allow_loopback=self.allow_loopback, allow_private=self.allow_private)

    def check_resolved(self, url: str, provider: str) -> None:
        """For clients that resolve names themselves (botocore): the URL and every address its
        host resolves to, under this client's policy; raises ``UpstreamError`` when refused."""
        check_resolved_url(
            url, provider, allow_loopback=self.allow_loopback, allow_private=self.allow_private
        )

    def post(
        self,
        url: str,
        body: bytes,
        *,
        headers: Mapping[str, str],
        provider: str,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> UpstreamRequest:
        """``async with client.post(...) as response``: the response of one POST, whatever its
        status. Transport failures, inside the block too, raise ``UpstreamError`` subclasses.
        """
        return UpstreamRequest(self, url, body, headers, provider, connect_timeout, read_timeout)

    def _guard(self, url: str, provider: str) -> None:
        try:
            problem = self._checked_urls[url]
        except KeyError:
            try:
                self.check_url(url)
                problem = None
            except InvalidRequestError as exc:
                problem = exc.message
            if len(self._checked_urls) >= 1024:
                self._checked_urls.clear()
            self._checked_urls[url] = problem
        if problem is not None:
            # The caller did not choose this URL; an admin did. So it is a gateway failure.
            raise UpstreamError(
                f"The configured address of provider '{provider}' is not allowed: {problem}.",
                code="upstream_address_forbidden",
            )

    def _target(self, url: str) -> tuple[Origin, str]:
        """The pooled origin of ``url`` (this loop's) and the request target to send it."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            # Connections of another (finished) loop cannot be used or closed from this one.
            self._origins, self._loop = {}, loop
        target = self._targets.get(url)
        if target is None:
            parts = urlsplit(url)  # a URL check_upstream_url accepted
            scheme, host = parts.scheme, parts.hostname or ""
            key = (scheme, host, parts.port or (443 if scheme == "https" else 80))
            path = quote(parts.path or "/", safe=_PATH_SAFE)
            if parts.query:
                path += "?" + quote(parts.query, safe=_QUERY_SAFE)
            if len(self._targets) >= 1024:
                self._targets.clear()
            target = self._targets[url] = (key, path)
        key, path = target
        origin = self._origins.get(key)
        if origin is None:
            scheme, host, port = key
            shown = f"[{host}]" if ":" in host else host
            origin = self._origins[key] = Origin(
                f"{scheme}://{shown}:{port}",
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                limit=self._limit_per_host,
                max_idle=self._limit_per_host,
                idle_seconds=self._keepalive_seconds,
                max_body=MAX_ANSWER_BYTES,
                resolver=self._resolver,
                user_agent=self._user_agent,
            )
        return origin, path

    async def close(self) -> None:
        """Closes the idle connections (at shutdown). The next request opens new ones."""
        origins, self._origins, self._loop = self._origins, {}, None
        for origin in origins.values():
            await origin.close()


class UpstreamRequest:
    """One request in flight: an async context manager yielding the ``UpstreamResponse``."""

    __slots__ = (
        "_body",
        "_client",
        "_connect_timeout",
        "_headers",
        "_provider",
        "_read_timeout",
        "_response",
        "_url",
    )

    def __init__(
        self,
        client: HttpClient,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        provider: str,
        connect_timeout: float | None,
        read_timeout: float | None,
    ) -> None:
        self._client = client
        self._url = url
        self._body = body
        self._headers = headers
        self._provider = provider
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._response: UpstreamResponse | None = None

    async def __aenter__(self) -> UpstreamResponse:
        self._client._guard(self._url, self._provider)
        origin, path = self._client._target(self._url)
        try:
            self._response = await origin.open(
                "POST",
                path,
                self._headers,
                self._body,
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
            )
        except _TRANSPORT_ERRORS as exc:
            raise translate_transport_error(exc, self._provider) from exc
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        response, self._response = self._response, None
        if response is not None:
            # Whole: its connection is back in the pool already. Still arriving: closed.
            response.release()
        if isinstance(exc, _TRANSPORT_ERRORS):
            raise translate_transport_error(exc, self._provider) from exc
