"""The data-plane routes answer the same whether ``DirectRoutes`` or FastAPI serves them.

``tollgate.api.direct`` solves the data-plane endpoints' parameters itself, for speed. This suite
sends one matrix of good and bad requests to three apps over the same services: the local app (direct
routes, FastAPI behind them), the framework-free app of the stream and gateway functions
(``direct_app``), and one where FastAPI serves every route. Status, error bodies, headers and
answers must match, so a difference in parsing, validation order or error wording fails here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
from fastapi import FastAPI
from starlette.responses import Response
from starlette.testclient import TestClient

from tollgate.api.apps import create_app, direct_app, fastapi_app, local_app
from tollgate.api.direct import DirectRoutes
from tollgate.api.messages import messages_routes
from tollgate.api.public import chat_routes, health_routes, models_routes
from tollgate.api.routes import InHeader, InPath, RouteTable

DATA_PLANE = [chat_routes, messages_routes, models_routes, health_routes]

CHAT = {"model": "fake/echo", "messages": [{"role": "user", "content": "Hi"}]}
MESSAGE = {"model": "fake/echo", "max_tokens": 32, "messages": [{"role": "user", "content": "Hi"}]}
#: Headers whose values differ per request by design.
VOLATILE_HEADERS = {"x-request-id", "date", "content-length"}
#: Fields whose values differ per request by design (ids, timestamps).
VOLATILE_FIELDS = {"id", "created", "created_at"}


@pytest.fixture
def framework(services) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """The same routes over the same services, every one served by FastAPI."""
    app = create_app(DATA_PLANE, title="t", services=services)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def plane(services) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """The same routes over the same services, served as the stream and gateway functions serve them."""
    with TestClient(direct_app(DATA_PLANE, services=services), raise_server_exceptions=False) as test_client:
        yield test_client


def scrub(value: Any) -> Any:
    """The answer without its top-level ids and timestamps (a streamed message nests them once),
    nor its model cards' times (a run that crosses a second boundary stamps them apart)."""
    if not isinstance(value, dict):
        return value
    scrubbed = {
        key: scrub(item) if key == "message" else item
        for key, item in value.items()
        if key not in VOLATILE_FIELDS
    }
    if value.get("object") == "list" and isinstance(value.get("data"), list):
        scrubbed["data"] = [
            {key: item for key, item in card.items() if key != "created"} if isinstance(card, dict) else card
            for card in value["data"]
        ]
    return scrubbed


def answer(response: Any) -> tuple[int, dict[str, str], Any]:
    headers = {name: value for name, value in response.headers.items() if name not in VOLATILE_HEADERS}
    if headers.get("content-type", "").startswith("text/event-stream"):
        events = [line for line in response.text.splitlines() if line.startswith("data: ")]
        body: Any = [scrub(json.loads(line[6:])) if line != "data: [DONE]" else line for line in events]
    else:
        try:
            body = scrub(response.json())
        except ValueError:
            body = response.text
    return response.status_code, headers, body


def same_answer(
    clients: list[TestClient], framework: TestClient, method: str, path: str, **request: Any
) -> Any:
    served_by_fastapi = answer(framework.request(method, path, **request))
    for client in clients:
        assert answer(client.request(method, path, **request)) == served_by_fastapi
    return served_by_fastapi


def auth(key: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", **headers}


JSON = {"Content-Type": "application/json"}

BODIES: list[tuple[str, bytes, dict[str, str]]] = [
    ("valid", json.dumps(CHAT).encode(), JSON),
    ("stream", json.dumps({**CHAT, "stream": True}).encode(), JSON),
    ("charset", json.dumps(CHAT).encode(), {"Content-Type": "application/json; charset=utf-8"}),
    ("vendor json", json.dumps(CHAT).encode(), {"Content-Type": "application/vnd.tollgate+json"}),
    ("broken json", b'{"model": "fake/echo", "messages": [', JSON),
    ("not utf-8", b'{"model": "\xff\xfe"}', JSON),
    ("empty", b"", JSON),
    ("null", b"null", JSON),
    ("list", b"[1, 2, 3]", JSON),
    ("string", b'"hello"', JSON),
    ("text/plain", json.dumps(CHAT).encode(), {"Content-Type": "text/plain"}),
    ("no content type", json.dumps(CHAT).encode(), {}),
    ("form", b"model=fake%2Fecho", {"Content-Type": "application/x-www-form-urlencoded"}),
    ("missing messages", b'{"model": "fake/echo"}', JSON),
    ("missing model", json.dumps({"messages": CHAT["messages"]}).encode(), JSON),
    ("wrong type", json.dumps({**CHAT, "temperature": "hot"}).encode(), JSON),
    ("unknown role", json.dumps({**CHAT, "messages": [{"role": "wizard", "content": "x"}]}).encode(), JSON),
    ("max_tokens 0", json.dumps({**CHAT, "max_tokens": 0}).encode(), JSON),
    ("unknown model", json.dumps({**CHAT, "model": "nobody/nothing"}).encode(), JSON),
]


@pytest.mark.parametrize(("name", "body", "headers"), BODIES, ids=[case[0] for case in BODIES])
def test_chat_bodies(client, plane, framework, tenant_key, name, body, headers):  # type: ignore[no-untyped-def]
    status, _, _ = same_answer(
        [client, plane],
        framework,
        "POST",
        "/v1/chat/completions",
        content=body,
        headers=auth(tenant_key, **headers),
    )
    assert status == (200 if name in ("valid", "stream", "charset", "vendor json") else status)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer tg-nothing-here"},
        {"x-api-key": "tg-nothing-here"},
    ],
    ids=["none", "basic", "empty bearer", "unknown key", "unknown x-api-key"],
)
@pytest.mark.parametrize(
    "body", [json.dumps(CHAT).encode(), b"{not json", b'{"model": 1}'], ids=["ok", "bad", "bad2"]
)
def test_authentication_comes_in_fastapis_order(client, plane, framework, headers, body):  # type: ignore[no-untyped-def]
    """Broken JSON is refused before the key is looked at; a bad body after it (FastAPI's order)."""
    status, _, _ = same_answer(
        [client, plane], framework, "POST", "/v1/chat/completions", content=body, headers={**JSON, **headers}
    )
    assert status in (400, 401)


@pytest.mark.parametrize("length", [0, 1, 255, 256])
@pytest.mark.parametrize("body", [CHAT, {"model": "fake/echo"}], ids=["valid body", "invalid body"])
def test_idempotency_key_bounds(client, plane, framework, tenant_key, length, body):  # type: ignore[no-untyped-def]
    """The header's declared bounds (1 to 255 characters), checked before the body, as FastAPI does.
    Each app gets its own key of the same length, so none replays another's answer."""
    answers = [
        test_client.post(
            "/v1/chat/completions",
            json=body,
            headers=auth(tenant_key, **{"Idempotency-Key": letter * length}),
        )
        for test_client, letter in ((client, "d"), (plane, "p"), (framework, "f"))
    ]
    assert answer(answers[0]) == answer(answers[1]) == answer(answers[2])
    assert answers[0].status_code == (200 if 1 <= length <= 255 and body is CHAT else 400)


def test_replays_are_identical(client, plane, framework, tenant_key):  # type: ignore[no-untyped-def]
    headers = auth(tenant_key, **{"Idempotency-Key": "parity-replay"})
    first = client.post("/v1/chat/completions", json=CHAT, headers=headers)
    assert first.status_code == 200
    status, replay_headers, body = same_answer(
        [client, plane], framework, "POST", "/v1/chat/completions", json=CHAT, headers=headers
    )
    assert status == 200 and replay_headers["idempotent-replayed"] == "true"
    assert body == scrub(first.json())


@pytest.mark.parametrize(
    "body",
    [MESSAGE, {**MESSAGE, "stream": True}, {"model": "fake/echo"}, {**MESSAGE, "max_tokens": "many"}],
    ids=["valid", "stream", "missing", "wrong type"],
)
def test_messages(client, plane, framework, tenant_key, body):  # type: ignore[no-untyped-def]
    status, _, answered = same_answer(
        [client, plane], framework, "POST", "/v1/messages", json=body, headers={"x-api-key": tenant_key}
    )
    if status != 200:
        assert answered["type"] == "error"  # Anthropic's shape on its route, on both paths


def test_messages_broken_json_in_anthropic_shape(client, plane, framework, tenant_key):  # type: ignore[no-untyped-def]
    status, _, answered = same_answer(
        [client, plane],
        framework,
        "POST",
        "/v1/messages",
        content=b"{",
        headers={"x-api-key": tenant_key, **JSON},
    )
    assert status == 400 and answered["type"] == "error"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/embeddings", {"model": "fake/embed", "input": ["a", "b"]}),
        ("/v1/embeddings", {"model": "fake/embed"}),
        ("/v1/embeddings", {"model": "fake/echo", "input": "a"}),
        ("/v1/images/generations", {"model": "fake/image", "prompt": "a red square"}),
        ("/v1/images/generations", {"model": "fake/image", "prompt": "x", "n": 0}),
    ],
)
def test_generation(client, plane, framework, tenant_key, path, body):  # type: ignore[no-untyped-def]
    same_answer([client, plane], framework, "POST", path, json=body, headers=auth(tenant_key))


@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer tg-x-y"}], ids=["tenant key", "unknown key"]
)
def test_model_list(client, plane, framework, tenant_key, headers):  # type: ignore[no-untyped-def]
    status, _, listing = same_answer(
        [client, plane], framework, "GET", "/v1/models", headers=headers or auth(tenant_key)
    )
    if not headers:
        assert status == 200 and {"fake/echo", "fake/embed"} <= {card["id"] for card in listing["data"]}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/chat/completions"),
        ("PUT", "/v1/models"),
        ("POST", "/v1/chat/completions/"),
        ("GET", "/v1/nope"),
    ],
)
def test_other_requests_are_answered_as_fastapi_answers_them(client, framework, tenant_key, method, path):  # type: ignore[no-untyped-def]
    status, _, _ = same_answer(
        [client], framework, method, path, headers=auth(tenant_key), follow_redirects=False
    )
    assert status in (307, 404, 405)


@pytest.fixture
def fastapi_entries(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the HTTP requests that entered a FastAPI app, in order."""
    entered: list[str] = []
    enter = FastAPI.__call__

    async def counting(self, scope, receive, send):  # type: ignore[no-untyped-def]
        if scope["type"] == "http":
            entered.append(scope["path"])
        await enter(self, scope, receive, send)

    monkeypatch.setattr(FastAPI, "__call__", counting)
    return entered


def test_declared_routes_never_reach_fastapi(services, tenant_key, admin_headers, fastapi_entries):  # type: ignore[no-untyped-def]
    """The point of the module: the local app's FastAPI is entered only for what it alone serves
    (its OpenAPI document and docs), never for a declared route, as in the functions."""
    app = local_app(services)
    assert isinstance(app.app, DirectRoutes)
    with TestClient(app) as test_client:
        for _ in range(2):
            chat = test_client.post("/v1/chat/completions", json=CHAT, headers=auth(tenant_key))
            assert chat.status_code == 200
            assert test_client.get("/v1/models", headers=auth(tenant_key)).status_code == 200
            assert test_client.get("/admin/v1/tenants", headers=admin_headers).status_code == 200
            assert test_client.get("/healthz").status_code == 200
        assert fastapi_entries == []
        assert test_client.get("/openapi.json").status_code == 200
    assert fastapi_entries == ["/openapi.json"]


def test_behind_a_path_prefix_the_hot_routes_stay_direct(services, tenant_key, fastapi_entries):  # type: ignore[no-untyped-def]
    """``uvicorn --root-path /prod``: the router matches the path without the prefix, and so do we."""
    with TestClient(local_app(services), root_path="/prod") as test_client:
        chat = test_client.post("/prod/v1/chat/completions", json=CHAT, headers=auth(tenant_key))
        listed = test_client.get("/prod/v1/models", headers=auth(tenant_key))
        missing = test_client.get("/prod/v1/nothing", headers=auth(tenant_key))
    assert chat.status_code == 200 and listed.status_code == 200 and missing.status_code == 404
    assert fastapi_entries == ["/prod/v1/nothing"]


def test_dependency_overrides_send_requests_through_fastapi(services, tenant_key):  # type: ignore[no-untyped-def]
    from tollgate.api.caller import Caller
    from tollgate.api.deps import get_caller
    from tollgate.errors import PermissionDeniedError

    app = local_app(services)

    def refuse() -> Caller:
        raise PermissionDeniedError("overridden")

    fastapi_app(app).dependency_overrides[get_caller] = refuse
    with TestClient(app) as test_client:
        refused = test_client.post("/v1/chat/completions", json=CHAT, headers=auth(tenant_key))
    assert refused.status_code == 403 and refused.json()["error"]["message"] == "overridden"


def test_an_unexpected_error_is_a_500_in_openai_shape(client, tenant_key, monkeypatch):  # type: ignore[no-untyped-def]
    from tollgate.chat import ChatService

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(ChatService, "begin", broken)
    response = client.post("/v1/chat/completions", json=CHAT, headers=auth(tenant_key))
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "api_error"
    assert "secret internals" not in response.text and response.headers["x-request-id"].startswith("req_")


def test_a_chunked_body_over_the_cap_is_a_413(client, tenant_key, services):  # type: ignore[no-untyped-def]
    """Without Content-Length the cap trips while the body is read: a 413 (FastAPI would say 400)."""
    limit = services.settings.max_request_bytes

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "fake/echo", "messages": [{"role": "user", "content": "'
        for _ in range(limit // 65536 + 2):
            yield b"x" * 65536
        yield b'"}]}'

    response = client.post("/v1/chat/completions", content=chunks(), headers=auth(tenant_key, **JSON))
    assert response.status_code == 413 and response.json()["error"]["type"] == "invalid_request_error"


def test_the_gateway_function_serves_the_direct_routes_under_mangum(services, tenant_key):  # type: ignore[no-untyped-def]
    """The deployed path: an API Gateway event through Mangum into ``gateway_app``'s direct routes."""
    from mangum import Mangum

    from tests.support.apigw import LambdaContext, rest_event
    from tollgate.api.apps import gateway_app

    def event(method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        payload = None if body is None else json.dumps(body)
        return rest_event(method, path, headers={"authorization": f"Bearer {tenant_key}"}, body=payload)

    handler = Mangum(gateway_app(services), lifespan="off")
    listed = handler(event("GET", "/v1/models", None), LambdaContext())  # type: ignore[arg-type]
    embedded = handler(
        event("POST", "/v1/embeddings", {"model": "fake/embed", "input": "hi"}), LambdaContext()
    )  # type: ignore[arg-type]
    refused = handler(event("POST", "/v1/embeddings", {"model": "fake/embed"}), LambdaContext())  # type: ignore[arg-type]

    assert listed["statusCode"] == 200 and "fake/embed" in listed["body"]
    assert embedded["statusCode"] == 200 and json.loads(embedded["body"])["data"][0]["object"] == "embedding"
    assert refused["statusCode"] == 400 and json.loads(refused["body"])["error"]["param"] == "input"


async def _thing(thing_id: str) -> Response:
    return Response()


async def _marked_thing(thing_id: Annotated[str, InPath()]) -> Response:
    return Response()


async def _things(limit: int = 10) -> Response:
    return Response()


async def _nothing() -> Response:
    return Response()


async def _unannotated():  # type: ignore[no-untyped-def]
    return {}


async def _counts() -> dict[str, int]:
    return {}


async def _required_header(tag: Annotated[str, InHeader(alias="X-Tag")]) -> Response:
    return Response()


@pytest.mark.parametrize(
    "declare",
    [
        lambda table: table.get("/v1/things/{thing_id}")(_thing),
        lambda table: table.get("/v1/things")(_things),
        lambda table: table.get("/v1/things", dependencies=[])(_things),
        lambda table: table.get("/v1/things")(_required_header),
        lambda table: table.get("/v1/things")(_marked_thing),
        lambda table: table.get("/v1/things/{thing_id}")(_nothing),
        lambda table: table.get("/v1/things")(_unannotated),
        lambda table: table.delete("/v1/things", status_code=204)(_counts),
        lambda table: (
            table.get("/v1/things/{thing_id}")(_marked_thing) and table.get("/v1/things/x")(_nothing)
        ),
    ],
    ids=[
        "unmarked path parameter",
        "unmarked query parameter",
        "route dependency",
        "required header",
        "path parameter not in the path",
        "path parameter not taken",
        "answer of no declared type",
        "answer where no body may go",
        "route shadowed by an earlier one",
    ],
)
def test_a_route_it_would_not_serve_as_fastapi_does_fails_at_build(services, declare):  # type: ignore[no-untyped-def]
    """Refused when declared (an option FastAPI would act on) or when the app is built (a parameter)."""

    def declare_and_build() -> None:
        table = RouteTable("things")
        declare(table)
        direct_app([table], services=services)

    with pytest.raises(TypeError, match=r"directly|shadowed"):
        declare_and_build()


# -- the framework-free app of the functions -------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nope", "/", "/v1/models/fake%2Fecho"])
def test_an_unknown_path_is_a_404_in_openai_shape(plane, framework, tenant_key, path):  # type: ignore[no-untyped-def]
    response = plane.get(path, headers=auth(tenant_key))
    assert answer(response) == answer(framework.get(path, headers=auth(tenant_key)))
    assert response.status_code == 404 and response.json()["error"]["type"] == "not_found_error"
    assert response.json()["error"]["message"].startswith("Unknown request URL: GET /")
    assert response.headers["x-request-id"].startswith("req_")


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/v1/chat/completions", "POST"),
        ("PUT", "/v1/models", "GET"),
        ("DELETE", "/v1/messages", "POST"),
    ],
)
def test_another_method_on_a_known_path_is_a_405_with_allow(plane, framework, method, path, allow):  # type: ignore[no-untyped-def]
    """As FastAPI answers (which also allows HEAD on a GET route: API Gateway sends the function
    only the declared methods)."""
    response = plane.request(method, path)
    served_by_fastapi = framework.request(method, path)
    assert response.status_code == served_by_fastapi.status_code == 405
    assert response.json() == served_by_fastapi.json()
    assert response.headers["allow"] == allow
    assert set(served_by_fastapi.headers["allow"].split(", ")) - {"HEAD"} == {allow}


def test_an_anthropic_route_answers_404_and_405_in_anthropic_shape(plane):  # type: ignore[no-untyped-def]
    assert plane.get("/v1/messages").json()["type"] == "error"
    assert plane.get("/v1/messages/batches").json()["type"] == "error"


def test_the_lifespan_closes_the_services_at_shutdown(services, monkeypatch):  # type: ignore[no-untyped-def]
    closed: list[bool] = []

    async def aclose() -> None:
        closed.append(True)

    monkeypatch.setattr(services, "aclose", aclose)
    with TestClient(direct_app(DATA_PLANE, services=services)) as test_client:
        assert test_client.get("/healthz").json() == {"status": "ok"}
        assert closed == []
    assert closed == [True]


@pytest.mark.parametrize(
    ("folder", "module"),
    [("gateway", "handler"), ("stream", "main"), ("admin", "handler"), ("rollup", "handler")],
)
def test_the_functions_load_no_web_framework(folder, module):  # type: ignore[no-untyped-def]
    """What the framework-free app is for: FastAPI (and what it brings: OpenTelemetry's API, its
    OpenAPI models, the pydantic v1 shim) stays out of every function's cold start, and out of the
    layer (``layers/providers/pyproject.toml``: FastAPI is the ``local`` extra)."""
    import subprocess
    import sys
    from pathlib import Path

    from bench.coldstart import entry_environment

    code = (
        f"import sys, {module}; "
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'fastapi', 'opentelemetry', 'pydantic'}))"
    )
    root = Path(__file__).resolve().parents[2]
    loaded = subprocess.run(  # noqa: S603 - our own interpreter, a fixed snippet
        [sys.executable, "-c", code],
        cwd=root / "functions" / folder,
        env={**entry_environment(), "PYTHONPATH": str(root / "layers" / "providers" / "src")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert loaded.strip() == "['pydantic']"  # pydantic validates the bodies; the framework is gone


def test_the_functions_answer_without_fastapi_installed(services, tenant_key, admin_headers, monkeypatch):  # type: ignore[no-untyped-def]
    """The layer ships no FastAPI, so no request path may import it late (an error handler, say):
    every function's app answers good and bad requests with FastAPI made unimportable."""
    import sys

    from tollgate.api.apps import admin_app, gateway_app, stream_app

    for name in [name for name in sys.modules if name == "fastapi" or name.startswith("fastapi.")]:
        monkeypatch.setitem(sys.modules, name, None)  # ``import fastapi...`` now raises ImportError
    with pytest.raises(ImportError):
        import fastapi  # noqa: F401
    stream = TestClient(stream_app(services), raise_server_exceptions=False)
    gateway = TestClient(gateway_app(services), raise_server_exceptions=False)
    admin = TestClient(admin_app(services), raise_server_exceptions=False)
    answers = [
        stream.post("/v1/chat/completions", json=CHAT, headers=auth(tenant_key)).status_code,
        stream.post(
            "/v1/chat/completions", json={**CHAT, "stream": True}, headers=auth(tenant_key)
        ).status_code,
        stream.post("/v1/chat/completions", content=b"{", headers=auth(tenant_key, **JSON)).status_code,
        stream.post("/v1/messages", json=MESSAGE, headers={"x-api-key": "tg-wrong"}).status_code,
        gateway.get("/v1/models", headers=auth(tenant_key)).status_code,
        gateway.post("/v1/embeddings", json={"model": "fake/embed"}, headers=auth(tenant_key)).status_code,
        gateway.delete("/v1/models").status_code,
        admin.get("/admin/v1/tenants", headers=admin_headers).status_code,
        admin.get("/admin/v1/tenants", params={"limit": "0"}, headers=admin_headers).status_code,
        admin.get("/admin/v1/tenants", params={"tenant": "x"}, headers=admin_headers).status_code,
        admin.get("/admin/v1/tenants").status_code,
        admin.post("/admin/v1/tenants", json={"id": "zed"}, headers=admin_headers).status_code,
        admin.get("/admin/v1/tenants/nobody", headers=admin_headers).status_code,
        admin.put("/admin/v1/tenants", headers=admin_headers).status_code,
        admin.get("/admin/v1/analytics", params={"granularity": "week"}, headers=admin_headers).status_code,
        admin.get("/healthz").status_code,
    ]
    assert answers == [200, 200, 400, 401, 200, 400, 405, 200, 400, 400, 401, 400, 404, 405, 400, 200]
