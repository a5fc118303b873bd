"""The routes, served without a web framework.

The endpoints are declared once, in ``tollgate.api.routes`` tables. ``DirectRoutes`` serves them: a
request whose method and path match a declared route (in declaration order, with Starlette's path
syntax) is solved here, in FastAPI's order, and handed to the endpoint function:

1. the body is read, and decoded as JSON when its content type is JSON (a decoding failure is
   FastAPI's ``json_invalid``);
2. the caller is authenticated: the data-plane key (``Caller``; under FastAPI a sub-dependency, which
   it solves first), or on an admin table the admin credential (every refusal audited), after which
   a query parameter the route does not declare is refused;
3. the path, query and header parameters are validated against their declared bounds, in that
   order, then the body against the endpoint's pydantic model, with FastAPI's error locations, so
   ``tollgate.api.errors`` names the first problem the same way;
4. the endpoint is called (a plain function in the thread pool), and its ``Response`` sent, or its
   value validated and serialised as its return annotation says, as FastAPI does.

A known path asked with another method is a 405 whose ``Allow`` names every method of the path.
Failures are raised as ``TollgateError`` for ``RequestContext`` to render. Every other request goes
to the app behind: FastAPI in the all-in-one local app (which declares the same endpoints for its
OpenAPI document, and serves them itself while ``dependency_overrides`` are set), or ``NoRoute`` in
the Lambda functions, which load no framework at all. FastAPI's own per-request work (five
middleware layers, routing, the dependency solver, content negotiation through ``email.message``, a
validator per parameter) took about a quarter of a chat request's CPU in the benchmark's profile,
and importing it ~40% of a function's cold start (``bench/ANALYSIS.md``).
``tests/functional/test_direct_routes.py`` and ``test_direct_admin_routes.py`` send matrices of
good and bad requests through both paths and require the same answers; which parameter kinds a
route may take is checked when the app is built, so a route this module cannot solve fails at cold
start, not on a request.
"""

from __future__ import annotations

import email.message
import functools
import inspect
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, get_args, get_origin, get_type_hints

from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from tollgate.api.caller import Caller, resolve_caller
from tollgate.api.errors import HTTPStatusError, not_found, validation_error
from tollgate.api.routes import Bounds, InHeader, InPath, InQuery, Route
from tollgate.container import Services
from tollgate.errors import InvalidRequestError

#: Statuses whose answer has no body (so a route answering one must return its own ``Response``).
_BODILESS = frozenset({204, 304})


@dataclass(frozen=True, slots=True)
class Param:
    """A path, query or header parameter: the endpoint's argument, the name it is sent under, and
    its validator (the annotation with its bounds); ``default`` when it is optional."""

    argument: str
    name: str
    location: str  # "path", "query" or "header", as FastAPI locates its errors
    adapter: TypeAdapter[Any]
    required: bool
    default: Any = None


@dataclass(frozen=True, slots=True)
class DirectRoute:
    """One endpoint and what it takes: the caller or the admin, the services, its parameters, a
    JSON body; and how its answer is sent."""

    route: Route
    is_async: bool
    caller: str | None
    access: str | None
    services: str | None
    params: tuple[Param, ...]  # path, then query, then header parameters: FastAPI's order
    body: tuple[str, TypeAdapter[Any]] | None
    returns: TypeAdapter[Any] | None  # None: the endpoint returns its own ``Response``
    declared_query: frozenset[str]

    @property
    def reads_query(self) -> bool:
        return self.route.admin or bool(self.declared_query)

    @classmethod
    def of(cls, route: Route) -> DirectRoute:
        """Reads the endpoint's signature; raises ``TypeError`` for anything it does not solve."""
        hints = get_type_hints(route.endpoint, include_extras=True)
        specials: list[tuple[str, type]] = [("caller", Caller), ("services", Services)]
        if route.admin:
            specials.append(("access", _admin_access_type()))
        found: dict[str, str | None] = {"caller": None, "access": None, "services": None}
        body: tuple[str, TypeAdapter[Any]] | None = None
        params: list[Param] = []
        for name, parameter in inspect.signature(route.endpoint).parameters.items():
            hint: Any = hints.get(name)  # None: not annotated, refused below
            marker = marker_of(hint)
            special = next((kind for kind, cls in specials if hint is cls), None)
            if special is not None and found[special] is None:
                found[special] = name
            elif marker is not None:
                params.append(_param(route, name, parameter, hint, marker))
            elif inspect.isclass(hint) and issubclass(hint, BaseModel) and body is None:
                body = (name, TypeAdapter(hint))
            else:
                raise TypeError(f"{route.path}: parameter {name!r} cannot be served directly")
        order = {"path": 0, "query": 1, "header": 2}
        params.sort(key=lambda param: order[param.location])  # stable: declaration order within each
        in_path = {match[1] for match in _PATH_PARAM.finditer(route.path)}
        missing = in_path - {param.name for param in params if param.location == "path"}
        if missing:
            raise TypeError(f"{route.path}: path parameter {sorted(missing)[0]!r} cannot be served directly")
        returns = _returns(route, hints.get("return"))
        return cls(
            route,
            inspect.iscoroutinefunction(route.endpoint),
            found["caller"],
            found["access"],
            found["services"],
            tuple(params),
            body,
            returns,
            frozenset(param.name for param in params if param.location == "query"),
        )

    async def respond(
        self, services: Services, scope: Scope, receive: Receive, path_values: Mapping[str, str]
    ) -> Response:
        """The endpoint's answer, or the ``TollgateError`` FastAPI's handlers would render."""
        result = await self.call(await self.arguments(services, scope, receive, path_values))
        if isinstance(result, Response):
            return result
        assert self.returns is not None
        value = self.returns.validate_python(result, from_attributes=True)  # a bad answer is a 500
        content = self.returns.dump_json(value, by_alias=True)
        return Response(content, status_code=self.route.status_code, media_type="application/json")

    async def call(self, arguments: dict[str, Any]) -> Any:
        if self.is_async:
            return await self.route.endpoint(**arguments)
        return await run_in_threadpool(self.route.endpoint, **arguments)

    async def arguments(
        self, services: Services, scope: Scope, receive: Receive, path_values: Mapping[str, str]
    ) -> dict[str, Any]:
        """The endpoint's keyword arguments, solved in FastAPI's order: the body read (and a JSON
        error raised), the credential, the undeclared query parameters (admin routes), then the
        parameters and the body validated."""
        headers = Headers(scope=scope)
        payload = await _json_body(receive, headers) if self.body is not None else _EMPTY
        arguments: dict[str, Any] = {}
        # The query string is parsed only where it is read (not on the data plane's hot routes).
        query = QueryParams(scope.get("query_string", b"")) if self.reads_query else _NO_QUERY
        if self.route.admin:
            await self._admit(services, scope, headers, query, arguments)
        if self.caller is not None:
            arguments[self.caller] = await resolve_caller(services, scope, headers)
        if self.services is not None:
            arguments[self.services] = services
        sources: dict[str, Mapping[str, str]] = {"path": path_values, "query": query, "header": headers}
        for param in self.params:
            value = sources[param.location].get(param.name)
            if value is not None:
                arguments[param.argument] = _validated(param.adapter, value, (param.location, param.name))
            elif param.required:
                raise validation_error([_missing((param.location, param.name))])
            else:
                arguments[param.argument] = param.default
        if self.body is not None:
            argument, adapter = self.body
            if payload is _EMPTY:
                raise validation_error([_missing(("body",))])
            arguments[argument] = _validated(adapter, payload, ("body",))
        return arguments

    async def _admit(
        self,
        services: Services,
        scope: Scope,
        headers: Headers,
        query: QueryParams,
        arguments: dict[str, Any],
    ) -> None:
        from tollgate.api.admin_caller import admin_access, authenticate_admin, refuse_unknown_query

        principal = await run_in_threadpool(authenticate_admin, services, scope, headers)
        if query:
            refuse_unknown_query(set(query.keys()), self.declared_query)
        if self.access is not None:
            arguments[self.access] = admin_access(services, scope, principal)


def _admin_access_type() -> type:
    from tollgate.admin.access import AdminAccess

    return AdminAccess


def marker_of(hint: Any) -> Bounds | None:
    """The ``InPath``, ``InQuery`` or ``InHeader`` of an ``Annotated[...]`` parameter, else None."""
    if get_origin(hint) is not Annotated:
        return None
    for meta in get_args(hint)[1:]:
        if isinstance(meta, InPath | InQuery | InHeader):
            return meta
    return None


@functools.cache
def _bounded(annotation: Any, bounds: Bounds) -> TypeAdapter[Any]:
    """One validator per annotation and bounds: the admin routes share a handful (a page size, a
    cursor, an id), and each costs pydantic a schema build at cold start."""
    bounded: Any = Annotated[annotation, Field(**bounds.constraints())]
    return TypeAdapter(bounded)


def _param(route: Route, name: str, parameter: inspect.Parameter, hint: Any, marker: Bounds) -> Param:
    adapter = _bounded(get_args(hint)[0], marker)
    required = parameter.default is inspect.Parameter.empty
    if isinstance(marker, InPath):
        if f"{{{name}}}" not in route.path and f"{{{name}:path}}" not in route.path:
            raise TypeError(
                f"{route.path}: path parameter {name!r} is not in the path, cannot be served directly"
            )
        return Param(name, name, "path", adapter, True)
    if isinstance(marker, InHeader):
        if required:  # FastAPI would answer a missing one with its own wording
            raise TypeError(f"{route.path}: a required header {name!r} cannot be served directly")
        return Param(name, marker.alias, "header", adapter, False, parameter.default)
    return Param(name, name, "query", adapter, required, None if required else parameter.default)


def _returns(route: Route, annotation: Any) -> TypeAdapter[Any] | None:
    if inspect.isclass(annotation) and issubclass(annotation, Response):
        return None
    if annotation is None or route.status_code in _BODILESS:
        raise TypeError(f"{route.path}: an answer without a Response class cannot be served directly")
    return TypeAdapter(annotation)


_NO_QUERY = QueryParams(b"")
_EMPTY = object()  # no body at all (FastAPI's ``Undefined``); JSON ``null`` is a body, and not valid


def _missing(location: tuple[str, ...]) -> dict[str, Any]:
    return {"type": "missing", "loc": location, "msg": "Field required", "input": None}


#: A path parameter: ``{name}`` (one segment) or ``{name:path}`` (the rest, slashes and all);
#: Starlette's syntax, and its regular expressions.
_PATH_PARAM = re.compile(r"{([a-zA-Z_][a-zA-Z0-9_]*)(?::(path))?}")


def _path_pattern(path: str) -> re.Pattern[str]:
    pattern, position = "^", 0
    for match in _PATH_PARAM.finditer(path):
        pattern += re.escape(path[position : match.start()])
        pattern += f"(?P<{match[1]}>{'.*' if match[2] else '[^/]+'})"
        position = match.end()
    return re.compile(pattern + re.escape(path[position:]) + "$")


class RouteMap:
    """Which declared route a method and path name, in declaration order as Starlette matches,
    and which methods a path has (a ``GET`` route does not answer ``HEAD``, as under FastAPI)."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = list(routes)
        self.exact: dict[tuple[str, str], int] = {}
        self.templated: list[tuple[re.Pattern[str], str, int]] = []
        self.patterns: list[re.Pattern[str] | None] = []  # per route; None for a path without parameters
        for index, route in enumerate(self.routes):
            if "{" not in route.path:
                if self.find(route.method, route.path) is not None:
                    raise TypeError(f"{route.method} {route.path}: shadowed by an earlier route")
                self.exact[(route.method, route.path)] = index
                self.patterns.append(None)
            else:
                pattern = _path_pattern(route.path)
                self.templated.append((pattern, route.method, index))
                self.patterns.append(pattern)

    def find(self, method: str, path: str) -> tuple[int, dict[str, str]] | None:
        index = self.exact.get((method, path))
        if index is not None:
            return index, {}
        for pattern, declared, index in self.templated:
            if declared == method and (match := pattern.match(path)) is not None:
                return index, match.groupdict()
        return None

    def methods(self, path: str) -> list[str]:
        """The methods some route serves at ``path``, in declaration order; empty for none."""
        methods: list[str] = []
        for route, pattern in zip(self.routes, self.patterns, strict=True):
            matches = route.path == path if pattern is None else pattern.match(path) is not None
            if matches and route.method not in methods:
                methods.append(route.method)
        return methods


class DirectRoutes:
    """Serves the given routes directly: a known path with another method is a 405 (with
    ``Allow``); everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, services: Services, routes: Iterable[Route]) -> None:
        self.app = app
        self.services = services
        self.map = RouteMap(routes)
        self.direct = [DirectRoute.of(route) for route in self.map.routes]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or getattr(self.app, "dependency_overrides", None):
            await self.app(scope, receive, send)
            return
        path = _route_path(scope)
        found = self.map.find(scope.get("method", ""), path)
        if found is None:
            methods = self.map.methods(path)
            if methods:
                raise HTTPStatusError("Method Not Allowed", status=405, headers={"Allow": ", ".join(methods)})
            await self.app(scope, receive, send)
            return
        index, path_values = found
        response = await self.direct[index].respond(self.services, scope, receive, path_values)
        await response(scope, receive, send)


class NoRoute:
    """What answers behind ``DirectRoutes`` when no framework does (every Lambda function): 404,
    raised for ``RequestContext`` to render as it renders every error; and the ASGI lifespan, which
    closes the services' connections at shutdown."""

    def __init__(self, services: Services) -> None:
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            raise not_found(scope.get("method", ""), scope.get("path", ""))

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
