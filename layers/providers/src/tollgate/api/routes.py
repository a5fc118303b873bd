"""The HTTP routes, declared without a web framework.

No Lambda function loads a web framework: each serves its routes through ``tollgate.api.direct``,
because FastAPI would cost it ~40% of its cold start for routing and solving it never needs
(``bench/ANALYSIS.md``). So the endpoints are declared here, in ``RouteTable``s, with plain
annotations that say what each parameter is:

* ``Caller``: the authenticated data-plane caller (``tollgate.api.caller``);
* ``AdminAccess``: the admin operations as the authenticated admin may use them (admin tables only);
* ``Services``: the services;
* a pydantic model: the JSON body;
* ``Annotated[T, InPath(...)]``: a path parameter (``{name}``, or ``{name:path}`` for one that spans
  slashes), with its bounds;
* ``Annotated[T, InQuery(...)] = default``: a query parameter (required without a default);
* ``Annotated[str | None, InHeader(alias="Name", ...)] = None``: an optional request header.

An endpoint returns a ``Response``, or a value of its return annotation, sent as JSON with the route's
``status_code``. It may be ``async`` or not; a plain function runs in the thread pool.

``tollgate.api.direct`` serves the tables on their own. ``tollgate.api.apps`` also declares the same
endpoints to FastAPI (``fastapi_router``) for the all-in-one local app and the OpenAPI document.
Nothing here imports FastAPI.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any

#: What a route may pass on to FastAPI: documentation, and the status of a successful answer, which
#: both serve alike. Anything else that changes how FastAPI would serve the route (dependencies, a
#: response class) would not hold on the direct path.
ROUTE_OPTIONS = frozenset(
    {
        "operation_id",
        "response_model",
        "include_in_schema",
        "summary",
        "description",
        "responses",
        "deprecated",
        "status_code",
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Bounds:
    """A parameter's documentation and its bounds, as pydantic's ``Field`` takes them."""

    description: str = ""
    pattern: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    ge: int | None = None
    le: int | None = None

    def constraints(self) -> dict[str, Any]:
        """The bounds that are set, by ``Field``'s names (everything but the description)."""
        return {
            bound.name: value
            for bound in fields(Bounds)
            if bound.name != "description" and (value := getattr(self, bound.name)) is not None
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class InPath(Bounds):
    """Marks a parameter as the path parameter of its name."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InQuery(Bounds):
    """Marks a parameter as the query parameter of its name."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InHeader(Bounds):
    """Marks a parameter as the request header ``alias``."""

    alias: str


Endpoint = Callable[..., Any]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    endpoint: Endpoint
    #: Passed on to FastAPI when it declares the route (``operation_id``, ``response_model``...).
    options: dict[str, Any] = field(default_factory=dict)
    #: An admin route: an admin credential is required (every refusal audited), and a query
    #: parameter the route does not declare is refused (``tollgate.api.admin_caller``).
    admin: bool = False

    @property
    def status_code(self) -> int:
        status: int = self.options.get("status_code", 200)
        return status


class RouteTable:
    """A group of routes (one OpenAPI tag) under ``prefix``, each declared once with ``@table.get``,
    ``.post``, ``.put``, ``.patch`` or ``.delete``."""

    def __init__(self, tag: str, *, prefix: str = "", admin: bool = False) -> None:
        self.tag = tag
        self.prefix = prefix
        self.admin = admin
        self.routes: list[Route] = []

    def get(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._add("GET", path, options)

    def post(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._add("POST", path, options)

    def put(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._add("PUT", path, options)

    def patch(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._add("PATCH", path, options)

    def delete(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._add("DELETE", path, options)

    def _add(self, method: str, path: str, options: dict[str, Any]) -> Callable[[Endpoint], Endpoint]:
        unknown = set(options) - ROUTE_OPTIONS
        if unknown:
            raise TypeError(f"{path}: {', '.join(sorted(unknown))} would not be served directly")

        def declare(endpoint: Endpoint) -> Endpoint:
            self.routes.append(Route(method, self.prefix + path, endpoint, options, admin=self.admin))
            return endpoint

        return declare


def routes_of(tables: Iterable[RouteTable]) -> list[Route]:
    return [route for table in tables for route in table.routes]
