"""How a function's process loads: the entry modules build their app inside ``cold_start()``.

Loading an app creates some 60,000 long-lived objects and almost no cyclic garbage, yet the cycle
collector runs 100-120 times while they load, each pass walking them again (``python -m
bench.import_profile admin``). So the collector is paused while the modules load, and what they
built is then frozen (``gc.freeze``): later collections, between requests, no longer walk the app's
own objects either. On the benchmark machine that takes 12-18% off the gateway, stream and admin
cold imports (``python -m bench.coldstart --against fb12c06``).

Tollgate uses no pydantic plugin, so pydantic is told not to look for any: otherwise the first
model it builds reads the entry points of every installed distribution. An operator who wants a
plugin sets ``PYDANTIC_DISABLE_PLUGINS`` (to an empty value, for all of them).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def cold_start() -> Iterator[None]:
    """Load the modules and build the app within: no collection meanwhile, all of it frozen after.

    If loading fails, the collector resumes and nothing is frozen.
    """
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()
