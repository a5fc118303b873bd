"""The optimisation proposals of ``bench/ANALYSIS.md`` as rewrites of a *scratch copy* of the
runtime, so each can be measured beside the real tree before anyone edits it:

    python -m bench.proposals /tmp/x p1 p2 p3 p5 p6        # copy layers/ to /tmp/x, apply the five
    uv run --group bench python -m bench.run --candidate /tmp/x/layers/providers/src \\
        --only c1,mangum,cold_import --no-litellm

The rewrites match the code as it was when they were written; one that no longer finds its text
says so and stops. P4 here calls the ledger inline (the fake answers in microseconds): an upper
bound of what an asyncio DynamoDB client would save, not a production change.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _edit(path: Path, old: str, new: str, count: int = 1) -> None:
    text = path.read_text()
    if text.count(old) < 1:
        raise SystemExit(f"{path}: the text to change is gone (the code moved on): {old[:80]!r}")
    path.write_text(text.replace(old, new, count))


def p1_async_dependencies(src: Path) -> None:
    """``api/deps.py``: the request-scoped dependencies do no I/O; as ``async def`` FastAPI stops
    running each in AnyIO's thread pool. Sync callers keep a plain ``request_id_of``."""
    path = src / "tollgate/api/deps.py"
    text = path.read_text()
    text, found = re.subn(
        r"^def get_request_id\(request: Request\) -> str:\n    request_id: str = request.state.request_id\n"
        r"    return request_id\n",
        "def request_id_of(request: Request) -> str:\n    request_id: str = request.state.request_id\n"
        "    return request_id\n\n\nasync def get_request_id(request: Request) -> str:\n"
        "    return request_id_of(request)\n",
        text,
        flags=re.M,
    )
    if not found:
        raise SystemExit("p1: get_request_id changed")
    text = text.replace("request_id=get_request_id(request)", "request_id=request_id_of(request)")
    for name in ("get_services", "get_deadline"):
        text, found = re.subn(rf"^def {name}\(", f"async def {name}(", text, flags=re.M)
        if not found:
            raise SystemExit(f"p1: {name} changed")
    path.write_text(text)


def p2_fastapi_telemetry_off(src: Path) -> None:
    """``api/apps.py``: FastAPI's built-in OpenTelemetry middleware, on by default, switched off."""
    _edit(
        src / "tollgate/api/apps.py",
        'app = FastAPI(title=title, version="0.1.0", lifespan=lifespan)',
        'app = FastAPI(\n        title=title,\n        version="0.1.0",\n        lifespan=lifespan,\n'
        '        telemetry={"tracing": False, "metrics": False, "logs": False},\n    )',
    )


def p3_lazy_idempotency_dump(src: Path) -> None:
    """``api/public.py``: ``body.model_dump_json()`` only when an ``Idempotency-Key`` came."""
    path = src / "tollgate/api/public.py"
    for endpoint in ("chat.completions", "embeddings", "images.generations"):
        old = f'key = idempotency(idempotency_key, "{endpoint}", body.model_dump_json())'
        _edit(path, old, f"{old} if idempotency_key else None")


def p4_inline_ledger(src: Path) -> None:
    """``billing.py``: the hold and the settlement called on the loop (upper bound of an async client)."""
    path = src / "tollgate/billing.py"
    _edit(
        path,
        "left = await asyncio.to_thread(self._ledger.hold_account, account, hold, now_ms=created_at_ms)",
        "left = self._ledger.hold_account(account, hold, now_ms=created_at_ms)",
    )
    _edit(
        path,
        "settled = await asyncio.to_thread(self._ledger.settle, settlement)",
        "settled = self._ledger.settle(settlement)",
    )


def p5_admin_dependencies_apart(src: Path) -> None:
    """``api/deps.py`` → ``api/admin_deps.py``: the data-plane functions stop importing the admin package."""
    path = src / "tollgate/api/deps.py"
    text = path.read_text()
    marker = "AccessDep = Annotated[AdminAccess, Depends(get_admin_access)]"
    if "def require_admin(" not in text or marker not in text:
        raise SystemExit("p5: the admin dependencies moved")
    start = text.index("def require_admin(")
    end = text.index(marker) + len(marker)
    block = text[start:end]
    text = text[:start] + text[end:]
    for line in (
        "from tollgate.admin.access import AdminAccess\n",
        "from tollgate.admin.audit import AdminContext\n",
        "from tollgate.admin.principal import AdminPrincipal\n",
        "from tollgate.errors import AuthenticationError, PermissionDeniedError\n",
    ):
        text = text.replace(line, "")
    path.write_text(text)
    helper = "request_id_of" if "def request_id_of" in text else "get_request_id"
    (src / "tollgate/api/admin_deps.py").write_text(
        '"""Dependencies of the admin routers, apart so the data-plane functions never import the\n'
        'admin package."""\n\n'
        "from __future__ import annotations\n\nfrom typing import Annotated\n\n"
        "from fastapi import Depends, Request\n\n"
        "from tollgate.admin.access import AdminAccess\nfrom tollgate.admin.audit import AdminContext\n"
        "from tollgate.admin.principal import AdminPrincipal\n"
        f"from tollgate.api.deps import ServicesDep, {helper}, presented_token\n"
        "from tollgate.errors import AuthenticationError, PermissionDeniedError\n\n\n" + block + "\n"
    )
    for module in ("admin.py", "analytics.py"):
        target = src / "tollgate/api" / module
        if not target.exists():
            continue
        content = target.read_text()
        content = content.replace(
            "from tollgate.api.deps import AccessDep, require_admin",
            "from tollgate.api.admin_deps import AccessDep, require_admin",
        )
        content = content.replace(
            "from tollgate.api.deps import AdminDep, ServicesDep",
            "from tollgate.api.admin_deps import AdminDep\nfrom tollgate.api.deps import ServicesDep",
        )
        target.write_text(content)


def p6_cache_route_list(src: Path) -> None:
    """``providers/registry.py``: ``list_models`` reads the route list from a TTL cache."""
    path = src / "tollgate/providers/registry.py"
    _edit(
        path,
        "        routes = await asyncio.to_thread(self._catalog.list_routes)\n",
        '        hit, routes = self._route_list.get("all")\n        if not hit or routes is None:\n'
        "            routes = await asyncio.to_thread(self._catalog.list_routes)\n"
        '            self._route_list.put("all", routes)\n',
    )
    _edit(
        path,
        "        self._routes: TTLCache",
        "        self._route_list: TTLCache[list[RouteRecord]] = TTLCache(cache_ttl)\n"
        "        self._routes: TTLCache",
    )
    _edit(
        path,
        "        self._routes.invalidate()\n",
        "        self._routes.invalidate()\n        self._route_list.invalidate()\n",
    )


PROPOSALS: dict[str, Callable[[Path], None]] = {
    "p1": p1_async_dependencies,
    "p2": p2_fastapi_telemetry_off,
    "p3": p3_lazy_idempotency_dump,
    "p4": p4_inline_ledger,
    "p5": p5_admin_dependencies_apart,
    "p6": p6_cache_route_list,
}


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if not args or any(name not in PROPOSALS for name in args[1:]):
        print(__doc__)
        print(
            "proposals:",
            ", ".join(
                f"{name} ({f.__doc__.split(':')[0] if f.__doc__ else ''})" for name, f in PROPOSALS.items()
            ),
        )
        return 2
    destination = Path(args[0])
    if destination.exists():
        shutil.rmtree(destination)
    shutil.copytree(ROOT / "layers", destination / "layers", ignore=shutil.ignore_patterns("__pycache__"))
    src = destination / "layers" / "providers" / "src"
    for name in args[1:]:
        PROPOSALS[name](src)
        print(f"{name} applied to {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
