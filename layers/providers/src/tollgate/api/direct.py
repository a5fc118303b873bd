"""The data-plane routes, served without FastAPI's per-request machinery.

FastAPI declares every route: each endpoint is defined once, as a FastAPI endpoint, and the OpenAPI
document comes from there. But on the routes a gateway serves all day, FastAPI's own per-request
work (five middleware layers, routing, the dependency solver, content negotiation through
``email.message``, a validator per parameter) took about a quarter of a chat request's CPU in the
benchmark's profile (``bench/ANALYSIS.md``).

``DirectRoutes`` sits between ``RequestContext`` and the FastAPI app. A request whose method and path
are exactly those of a data-plane route is solved here, in FastAPI's order, and handed to the *same
endpoint function*:

1. the body is read, and decoded as JSON when its content type is JSON (a decoding failure is
   FastAPI's ``json_invalid``);
2. the caller is authenticated (``CallerDep`` is a sub-dependency, which FastAPI solves first);
3. header parameters are validated against their declared bounds, then the body against the
   endpoint's pydantic model, with FastAPI's error locations, so ``tollgate.api.errors`` names the
   first problem the same way;
4. the endpoint's ``Response`` is sent.

Failures are raised as ``TollgateError`` for ``RequestContext`` to render. Every other request (other
paths, other methods, any request while ``dependency_overrides`` are set) goes to FastAPI untouched.
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

from fastapi import APIRouter, FastAPI, params
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter, ValidationError
from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from tollgate.api.deps import CallerDep, resolve_caller
from tollgate.api.errors import validation_error
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
    def of(cls, route: APIRoute) -> DirectRoute:
        """Reads the endpoint's signature; raises ``TypeError`` for anything it would not do as
        FastAPI does: a parameter kind it does not solve, a path parameter, a route-level dependency."""
        if route.dependencies or route.param_convertors:
            raise TypeError(f"{route.path}: route dependencies and path parameters are not served directly")
        hints = get_type_hints(route.endpoint, include_extras=True)
        caller: str | None = None
        body: tuple[str, TypeAdapter[Any]] | None = None
        headers: list[HeaderParam] = []
        for name in inspect.signature(route.endpoint).parameters:
            hint: Any = hints.get(name)  # None: not annotated, refused below
            header = _header_info(hint)
            if hint == CallerDep:
                caller = name
            elif inspect.isclass(hint) and issubclass(hint, BaseModel) and body is None:
                body = (name, TypeAdapter(hint))
            elif header is not None and header.alias is not None:
                headers.append(HeaderParam(name, header.alias, TypeAdapter(hint)))
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
                raise validation_error(RequestValidationError([_MISSING_BODY]))
            arguments[argument] = _validated(adapter, payload, ("body",))
        return arguments


_EMPTY = object()  # no body at all (FastAPI's ``Undefined``); JSON ``null`` is a body, and not valid
_MISSING_BODY = {"type": "missing", "loc": ("body",), "msg": "Field required", "input": None}


class DirectRoutes:
    """Serves the given routes directly; everything else goes to ``app``."""

    def __init__(self, app: FastAPI, services: Services, routes: Iterable[APIRoute]) -> None:
        self.app = app
        self.services = services
        self.routes: dict[tuple[str, str], DirectRoute] = {}
        for route in routes:
            direct = DirectRoute.of(route)
            for method in route.methods or ():
                self.routes[(method, route.path)] = direct

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self.routes.get((scope.get("method", ""), _route_path(scope)))
        if route is None or scope["type"] != "http" or self.app.dependency_overrides:
            await self.app(scope, receive, send)
            return
        response = await route.endpoint(**await route.arguments(self.services, scope, receive))
        await response(scope, receive, send)


def routes_of(routers: Iterable[APIRouter]) -> list[APIRoute]:
    """The routes declared on ``routers``, which must be included in the app without a prefix."""
    return [route for router in routers for route in router.routes if isinstance(route, APIRoute)]


def _route_path(scope: Scope) -> str:
    """The path the app's router matches: ``path`` without ``root_path`` (Starlette's rule), so a
    deployment behind a path prefix takes the direct routes too."""
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root) and path[len(root) : len(root) + 1] == "/":
        return path[len(root) :]
    return path


def _header_info(hint: Any) -> params.Header | None:
    if get_origin(hint) is not Annotated:
        return None
    for meta in get_args(hint)[1:]:
        if isinstance(meta, params.Header):
            return meta
    return None


def _validated(adapter: TypeAdapter[Any], value: Any, location: tuple[str, ...]) -> Any:
    try:
        return adapter.validate_python(value, from_attributes=True)
    except ValidationError as error:
        problems = [{**item, "loc": (*location, *item["loc"])} for item in error.errors(include_url=False)]
        raise validation_error(RequestValidationError(problems)) from None


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
        raise validation_error(RequestValidationError([problem])) from None
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
