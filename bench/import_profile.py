"""Where a function's cold import goes: the cycle collector's passes and the slowest model classes.

Builds one function's app in a fresh process the way its entry module does, but without
``tollgate.startup.cold_start()`` (so the collector runs as it would in any Python program), and
reports every collector pass made meanwhile (``gc.callbacks``) and the pydantic model classes that
took longest to build (timed on pydantic's model metaclass).

    python -m bench.import_profile admin      # or gateway, stream
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from bench.coldstart import ROOT, entry_environment

_PROFILE = """
import gc, json, sys, time
from pydantic._internal import _model_construction

passes = {}
started = []
def on_collect(phase, info):
    if phase == "start":
        started.append(time.perf_counter())
    else:
        count, seconds = passes.get(info["generation"], (0, 0.0))
        passes[info["generation"]] = (count + 1, seconds + time.perf_counter() - started.pop())
gc.callbacks.append(on_collect)

classes = []
build = _model_construction.ModelMetaclass.__new__
def timed(mcs, name, bases, namespace, *args, **kwargs):
    began = time.perf_counter()
    cls = build(mcs, name, bases, namespace, *args, **kwargs)
    classes.append((time.perf_counter() - began, f"{namespace.get('__module__')}.{name}"))
    return cls
_model_construction.ModelMetaclass.__new__ = timed

began = time.perf_counter()
from mangum import Mangum
from tollgate.api import apps
app = getattr(apps, sys.argv[1] + "_app")()
total = time.perf_counter() - began
classes.sort(reverse=True)
print(json.dumps({
    "import_ms": total * 1000,
    "collector": {str(g): {"passes": n, "ms": s * 1000} for g, (n, s) in sorted(passes.items())},
    "model_classes": len(classes),
    "slowest_classes_ms": {name: seconds * 1000 for seconds, name in classes[:8]},
}))
"""


def profile(function: str) -> dict[str, object]:
    env = entry_environment() | {"PYTHONPATH": str(ROOT / "layers/providers/src")}
    env.setdefault("PYDANTIC_DISABLE_PLUGINS", os.environ.get("PYDANTIC_DISABLE_PLUGINS", "__all__"))
    command = [sys.executable, "-c", _PROFILE, function]
    subprocess.run(command, cwd=ROOT, env=env, capture_output=True, check=True)  # writes the .pyc files
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    result: dict[str, object] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("function", choices=["gateway", "admin", "stream"])
    options = parser.parse_args(argv)
    print(json.dumps(profile(options.function), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
