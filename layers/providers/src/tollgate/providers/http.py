"""The process-wide upstream HTTP client and the outbound URL guard.

One ``aiohttp.ClientSession`` per process, created on first use inside the running event loop
(never at import) and recreated if the loop changed or the session was closed. Every adapter that
speaks HTTP shares it through ``HttpClient``::

    client = HttpClient(allow_loopback=False, allow_private=False, connect_timeout=10, read_timeout=300)
    async with client.post(url, body, headers=headers, provider="openai") as response:
        ...
    await client.close()  # at shutdown

Outbound URLs are checked twice. ``check_upstream_url`` is a pure check of the URL text (run when
an admin saves a base URL, and again, cached, before each request: aiohttp connects to IP
literals without asking a resolver). ``GuardedResolver`` checks every address a hostname resolves
to at connect time, so a name that later resolves to the metadata endpoint (DNS rebinding) is
refused. Redirects are never followed; a 3xx from a provider is an error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeAlias
from urllib.parse import urlsplit

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from tollgate.errors import InvalidRequestError, TollgateError, UpstreamError, UpstreamTimeoutError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "ForbiddenUpstreamAddressError",
    "GuardedResolver",
    "HttpClient",
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
    """A provider's host name resolved to an address Tollgate must not connect to.

    An ``OSError`` so aiohttp reports it like any failed resolution (``ClientConnectorDNSError``).
    """


class GuardedResolver(AbstractResolver):
    """Wraps aiohttp's default resolver and refuses forbidden resolved addresses.

    A name is refused if any of its addresses is forbidden: a name that mixes public and
    metadata addresses is an attack, not a configuration to work around.
    """

    def __init__(
        self, *, allow_loopback: bool, allow_private: bool, inner: AbstractResolver | None = None
    ) -> None:
        self._allow_loopback = allow_loopback
        self._allow_private = allow_private
        self._inner: AbstractResolver = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        problem = _host_problem(host, allow_loopback=self._allow_loopback, allow_private=self._allow_private)
        if problem is not None:
            raise ForbiddenUpstreamAddressError(problem)
        results = await self._inner.resolve(host, port, family)
        for result in results:
            try:
                ip = ipaddress.ip_address(result["host"].split("%", 1)[0])
            except ValueError:
                raise ForbiddenUpstreamAddressError("the host resolved to an unreadable address") from None
            problem = address_problem(
                ip, allow_loopback=self._allow_loopback, allow_private=self._allow_private
            )
            if problem is not None:
                raise ForbiddenUpstreamAddressError(problem)
        return results

    async def close(self) -> None:
        await self._inner.close()


# -- Transport errors ----------------------------------------------------------------------


def translate_transport_error(exc: BaseException, provider: str) -> TollgateError:
    """A failed exchange with a provider as Tollgate's error. Messages name the provider only:
    never its URL (which may carry a key in its query) or aiohttp's text (which names the host).
    """
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts subclass it
        return UpstreamTimeoutError(f"The provider '{provider}' did not answer in time.")
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc.os_error, ForbiddenUpstreamAddressError):
            return UpstreamError(
                f"The configured address of provider '{provider}' is not allowed: {exc.os_error}.",
                code="upstream_address_forbidden",
            )
        return UpstreamError(
            f"Tollgate could not connect to the provider '{provider}'.", code="upstream_unreachable"
        )
    if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError | aiohttp.ClientOSError):
        return UpstreamError(
            f"The connection to the provider '{provider}' was lost mid-response.",
            code="upstream_disconnected",
        )
    return UpstreamError(f"The exchange with the provider '{provider}' failed.", code="upstream_unreachable")


# -- The client ------------------------------------------------------------------------------

_TRANSPORT_ERRORS = (aiohttp.ClientError, TimeoutError)


class HttpClient:
    """The process-wide HTTP client for providers: one pooled session, guarded, never redirected.

    ``connect_timeout`` bounds getting a connection (pool wait, DNS, TCP and TLS);
    ``read_timeout`` is the idle timeout between two reads of the response, so a stream may run
    as long as it keeps sending (keep-alive comments count).
    """

    def __init__(
        self,
        *,
        allow_loopback: bool = False,
        allow_private: bool = False,
        connect_timeout: float = 10.0,
        read_timeout: float = 300.0,
        limit: int = 256,
        limit_per_host: int = 128,
        dns_cache_seconds: int = 30,
        keepalive_seconds: float = 30.0,
        user_agent: str = "tollgate",
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.allow_loopback = allow_loopback
        self.allow_private = allow_private
        self._timeout = aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read_timeout)
        self._limit = limit
        self._limit_per_host = limit_per_host
        self._dns_cache_seconds = dns_cache_seconds
        self._keepalive_seconds = keepalive_seconds
        self._user_agent = user_agent
        #: The DNS resolver behind the guard (aiohttp's default; tests pass their own).
        self._resolver = resolver
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checked_urls: dict[str, str | None] = {}

    def check_url(self, url: str) -> None:
        """``check_upstream_url`` under this client's policy (raises ``InvalidRequestError``)."""
        check_upstream_url(url, allow_loopback=self.allow_loopback, allow_private=self.allow_private)

    def check_resolved(self, url: str, provider: str) -> None:
        """For clients that resolve names themselves (botocore): the URL and every address its
        host resolves to, under this client's policy; raises ``UpstreamError`` when refused."""
        check_resolved_url(
            url, provider, allow_loopback=self.allow_loopback, allow_private=self.allow_private
        )

    def session(self) -> aiohttp.ClientSession:
        """The shared session of the running loop, created on first use."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.closed or self._loop is not loop:
            # A session of another (finished) loop cannot be closed from this one; drop it.
            session = self._session = self._new_session()
            self._loop = loop
        return session

    def _new_session(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._limit,
            limit_per_host=self._limit_per_host,
            use_dns_cache=True,
            ttl_dns_cache=self._dns_cache_seconds,
            keepalive_timeout=self._keepalive_seconds,
            resolver=GuardedResolver(
                allow_loopback=self.allow_loopback, allow_private=self.allow_private, inner=self._resolver
            ),
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=self._timeout,
            headers={"User-Agent": self._user_agent},
            cookie_jar=aiohttp.DummyCookieJar(),  # cookies must never cross tenants or providers
            trust_env=False,  # no proxies from the environment
            raise_for_status=False,
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
        return self.request(
            "POST",
            url,
            body,
            headers=headers,
            provider=provider,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
        )

    def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        *,
        headers: Mapping[str, str],
        provider: str,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> UpstreamRequest:
        if connect_timeout is None and read_timeout is None:
            timeout = self._timeout
        else:
            timeout = aiohttp.ClientTimeout(
                total=None,
                connect=connect_timeout if connect_timeout is not None else self._timeout.connect,
                sock_read=read_timeout if read_timeout is not None else self._timeout.sock_read,
            )
        return UpstreamRequest(self, method, url, body, headers, provider, timeout)

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

    async def close(self) -> None:
        """Closes the session (at shutdown). The next request opens a new one."""
        session, self._session, self._loop = self._session, None, None
        if session is not None and not session.closed:
            await session.close()


class UpstreamRequest:
    """One request in flight: an async context manager yielding the ``aiohttp.ClientResponse``."""

    __slots__ = ("_body", "_client", "_headers", "_method", "_provider", "_response", "_timeout", "_url")

    def __init__(
        self,
        client: HttpClient,
        method: str,
        url: str,
        body: bytes | None,
        headers: Mapping[str, str],
        provider: str,
        timeout: aiohttp.ClientTimeout,
    ) -> None:
        self._client = client
        self._method = method
        self._url = url
        self._body = body
        self._headers = headers
        self._provider = provider
        self._timeout = timeout
        self._response: aiohttp.ClientResponse | None = None

    async def __aenter__(self) -> aiohttp.ClientResponse:
        self._client._guard(self._url, self._provider)
        session = self._client.session()
        try:
            self._response = await session.request(
                self._method,
                self._url,
                data=self._body,
                headers=self._headers,
                timeout=self._timeout,
                allow_redirects=False,
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
        response = self._response
        if response is not None:
            self._response = None
            if exc is None:
                # Back to the pool if the body was read to its end; closed otherwise.
                response.release()
            else:
                response.close()
        if isinstance(exc, _TRANSPORT_ERRORS):
            raise translate_transport_error(exc, self._provider) from exc
