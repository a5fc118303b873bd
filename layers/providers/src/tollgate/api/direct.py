"""The data-plane routes, served without a web framework's per-request machinery.

The endpoints are declared once, in ``tollgate.api.routes`` tables. ``DirectRoutes`` serves them: a
request whose method and path are exactly those of a declared route is solved here, in FastAPI's
order, and handed to the endpoint function:

1. the body is read, and decoded as JSON when its content type is JSON (a decoding failure is
   FastAPI's ``json_invalid``);
2. the caller is authenticated (``Caller``; under FastAPI a sub-dependency, which it solves first);
3. header parameters are validated against their declared bounds, then the body against the
   endpoint's pydantic model, with FastAPI's error locations, so ``tollgate.api.errors`` names the
   first problem the same way;
4. the endpoint's ``Response`` is sent.

Failures are raised as ``TollgateError`` for ``RequestContext`` to render. Every other request goes
to the app behind: FastAPI in the all-in-one local app (which declares the same endpoints, and
serves them itself while ``dependency_overrides`` are set), or ``NoRoute`` in the stream and gateway
functions, which load no framework at all. FastAPI's own per-request work (five middleware layers,
routing, the dependency solver, content negotiation through ``email.message``, a validator per
parameter) took about a quarter of a chat request's CPU in the benchmark's profile, and importing it
~40% of those functions' cold start (``bench/ANALYSIS.md``).
``tests/functional/test_direct_routes.py`` sends the same matrix of good and bad requests through
both paths and requires the same answers; which parameter kinds a route may take is checked when
the app is built, so a route this module cannot solve fails at cold start, not on a request.
"""

from __future__ import annotations

import email.message
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tollgate.api.caller import Caller, resolve_caller
from tollgate.api.errors import HTTPStatusError, not_found, validation_error
from tollgate.api.routes import InHeader, Route
from tollgate.container import Services
from tollgate.errors import InvalidRequestError

Endpoint = Callable[..., Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class HeaderParam:
    argument: str
    name: str  # as sent, e.g. ``Idempotency-Key``
    adapter: TypeAdapter[Any]


@dataclass(frozen=True, slots=True)
class DirectRoute:
    """One endpoint and what it takes: the caller, a JSON body, header parameters."""

    endpoint: Endpoint
    caller: str | None
    body: tuple[str, TypeAdapter[Any]] | None
    headers: tuple[HeaderParam, ...]

    @classmethod
    def of(cls, route: Route) -> DirectRoute:
        """Reads the endpoint's signature; raises ``TypeError`` for a parameter kind it does not solve."""
        if "{" in route.path:
            raise TypeError(f"{route.path}: path parameters are not served directly")
        hints = get_type_hints(route.endpoint, include_extras=True)
        caller: str | None = None
        body: tuple[str, TypeAdapter[Any]] | None = None
        headers: list[HeaderParam] = []
        for name, parameter in inspect.signature(route.endpoint).parameters.items():
            hint: Any = hints.get(name)  # None: not annotated, refused below
            header = header_of(hint)
            if hint is Caller:
                caller = name
            elif inspect.isclass(hint) and issubclass(hint, BaseModel) and body is None:
                body = (name, TypeAdapter(hint))
            elif header is not None and parameter.default is None:  # optional headers only
                bounds = Field(min_length=header.min_length, max_length=header.max_length)
                bounded: Any = Annotated[get_args(hint)[0], bounds]
                headers.append(HeaderParam(name, header.alias, TypeAdapter(bounded)))
            else:
                raise TypeError(f"{route.path}: parameter {name!r} cannot be served directly")
        return cls(route.endpoint, caller, body, tuple(headers))

    async def arguments(self, services: Services, scope: Scope, receive: Receive) -> dict[str, Any]:
        """The endpoint's keyword arguments, or the ``TollgateError`` FastAPI's handlers would render."""
        headers = Headers(scope=scope)
        payload = await _json_body(receive, headers) if self.body is not None else _EMPTY
        arguments: dict[str, Any] = {}
        if self.caller is not None:
            arguments[self.caller] = await resolve_caller(services, scope, headers)
        for param in self.headers:
            value = headers.get(param.name)
            if value is not None:
                arguments[param.argument] = _validated(param.adapter, value, ("header", param.name))
        if self.body is not None:
            argument, adapter = self.body
            if payload is _EMPTY:
                raise validation_error([_MISSING_BODY])
            arguments[argument] = _validated(adapter, payload, ("body",))
        return arguments


_EMPTY = object()  # no body at all (FastAPI's ``Undefined``); JSON ``null`` is a body, and not valid
_MISSING_BODY = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}


class DirectRoutes:
    """Serves the given routes directly; everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, services: Services, routes: Iterable[Route]) -> None:
        self.app = app
        self.services = services
        self.routes: dict[tuple[str, str], DirectRoute] = {
            (route.method, route.path): DirectRoute.of(route) for route in routes
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get((scope.get("method", ""), _route_path(scope)))
        if route is None or scope["type"] != "http" or getattr(self.app, "dependency_overrides", None):
            await self.app(scope, receive, send)
            return
        response = await route.endpoint(**await route.arguments(self.services, scope, receive))
        await response(scope, receive, send)


class NoRoute:
    """What answers behind ``DirectRoutes`` when no framework does (the stream and gateway functions):
    404 for an unknown path, 405 (with ``Allow``) for a known path's other methods, raised for
    ``RequestContext`` to render as it renders every error; and the ASGI lifespan, which closes the
    services' connections at shutdown."""

    def __init__(self, services: Services, routes: Iterable[Route]) -> None:
        self.services = services
        self.allowed: dict[str, list[str]] = {}
        for route in routes:
            self.allowed.setdefault(route.path, []).append(route.method)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        methods = self.allowed.get(_route_path(scope))
        if methods is None:
            raise not_found(scope.get("method", ""), scope.get("path", ""))
        raise HTTPStatusError("Method Not Allowed", status=405, headers={"Allow": ", ".join(methods)})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.services.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _route_path(scope: Scope) -> str:
    """The path the app's router matches: ``path`` without ``root_path`` (Starlette's rule), so a
    deployment behind a path prefix takes the direct routes too."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


def header_of(hint: Any) -> InHeader | None:
    """The ``InHeader`` of an ``Annotated[..., InHeader(...)]`` parameter, else None."""
    if get_origin(hint) is not Annotated:
        return None
    for meta in get_args(hint)[1:]:
        if isinstance(meta, InHeader):
            return meta
    return None


def _validated(adapter: TypeAdapter[Any], value: Any, location: tuple[str, ...]) -> Any:
    try:
        return adapter.validate_python(value, from_attributes=True)
    except ValidationError as error:
        problems = [{**item, "loc": (*location, *item["loc"])} for item in error.errors(include_url=False)]
        raise validation_error(problems) from None


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _json_body(receive: Receive, headers: Mapping[str, str]) -> Any:
    """The body as FastAPI would pass it on: decoded JSON when the content type is JSON, the raw
    bytes for any other content type (which the model then refuses), ``_EMPTY`` when empty."""
    body = await _read_body(receive)
    if not body:
        return _EMPTY
    if not _is_json(headers.get("content-type")):
        return body
    try:
        return json.loads(body)
    except json.JSONDecodeError as error:
        problem = {"type": "json_invalid", "loc": ("body", error.pos), "msg": "JSON decode error"}
        raise validation_error([problem]) from None
    except ValueError:  # not UTF-8, UTF-16 or UTF-32
        raise InvalidRequestError("There was an error parsing the body") from None


def _is_json(content_type: str | None) -> bool:
    """FastAPI's rule (strict content type): ``application/json`` or ``application/*+json``."""
    if content_type is None:
        return False
    if content_type == "application/json":
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() != "application":
        return False
    subtype = message.get_content_subtype()
    return subtype == "json" or subtype.endswith("+json")
