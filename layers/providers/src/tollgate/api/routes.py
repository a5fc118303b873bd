"""The data-plane routes, declared without a web framework.

The stream and gateway functions serve only these routes, and serve them through
``tollgate.api.direct``; FastAPI would cost them ~40% of their cold start for routing they never use
(``bench/ANALYSIS.md``). So the endpoints are declared here, in a ``RouteTable``, with plain
annotations that say what each parameter is:

* ``Caller``: the authenticated caller (``tollgate.api.caller``);
* a pydantic model: the JSON body;
* ``Annotated[str | None, InHeader("Name", ...)] = None``: an optional request header, with its bounds.

``tollgate.api.direct`` serves a table on its own; ``tollgate.api.apps`` also declares the same
endpoints to FastAPI (``fastapi_router``) for the all-in-one local app and the OpenAPI document.
Nothing here imports FastAPI.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import Response

Endpoint = Callable[..., Awaitable[Response]]
#: What a route may pass on to FastAPI: documentation only. Anything that changes how FastAPI would
#: serve the route (dependencies, a status code, a response class) would not hold on the direct path.
DOCUMENTATION_OPTIONS = frozenset(
    {
        "operation_id",
        "response_model",
        "include_in_schema",
        "summary",
        "description",
        "responses",
        "deprecated",
    }
)


@dataclass(frozen=True, slots=True)
class InHeader:
    """Marks a parameter as the request header ``alias``, a string of the given bounds."""

    alias: str
    description: str = ""
    min_length: int | None = None
    max_length: int | None = None


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    endpoint: Endpoint
    #: Passed on to FastAPI when it declares the route (``operation_id``, ``response_model``...).
    options: dict[str, Any] = field(default_factory=dict)


class RouteTable:
    """A group of routes (one OpenAPI tag), each declared once with ``@table.get`` or ``@table.post``."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.routes: list[Route] = []

    def get(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._add("GET", path, options)

    def post(self, path: str, **options: Any) -> Callable[[Endpoint], Endpoint]:
        return self._add("POST", path, options)

    def _add(self, method: str, path: str, options: dict[str, Any]) -> Callable[[Endpoint], Endpoint]:
        unknown = set(options) - DOCUMENTATION_OPTIONS
        if unknown:
            raise TypeError(f"{path}: {', '.join(sorted(unknown))} would not be served directly")

        def declare(endpoint: Endpoint) -> Endpoint:
            self.routes.append(Route(method, path, endpoint, options))
            return endpoint

        return declare


def routes_of(tables: Iterable[RouteTable]) -> list[Route]:
    return [route for table in tables for route in table.routes]
