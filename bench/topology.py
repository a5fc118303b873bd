"""What every part of the harness agrees on: cores, the bench tenant and key, and the models.

A mock model's name is its behaviour (``bench.mock_upstream.Behaviour``): ``lat50`` answers after
50 ms; ``lat0-gap5-n16`` streams 16 content chunks 5 ms apart. Each gateway maps a public model
name to one of them, so one mock process serves every scenario.
"""

from __future__ import annotations

#: Core of the server under test (Tollgate, LiteLLM, the naive pass-through).
SERVER_CORE = 0
#: Core of the mock upstream, the load generators and the harness itself.
CLIENT_CORE = 1

TENANT = "bench"
#: A fixed, well-formed hub key (``tg-<16 hex>-<43 url-safe>``), so the stored API Gateway event
#: in ``bench/events/`` carries a key that is valid in every run (the bench registers it).
KEY_ID = "0123456789abcdef"
KEY_SECRET = "benchbenchbenchbenchbenchbenchbenchbench123"
BENCH_KEY = f"tg-{KEY_ID}-{KEY_SECRET}"
ADMIN_KEY = "tga-bench-admin-key-not-a-secret"
UPSTREAM_KEY = "sk-bench-upstream"
LITELLM_KEY = "sk-litellm-bench-master"

#: public model name -> mock model (behaviour)
MODELS: dict[str, str] = {
    "bench-l0": "lat0",
    "bench-l50": "lat50",
    # c=1 streams: TTFB and inter-chunk gaps
    "bench-s1": "lat0-gap5-n16",
    # c=50 streams
    "bench-s50": "lat0-gap20-n20",
}

#: What a priced model costs (per 1M tokens) and Tollgate sells it at: credit mode holds and
#: settles on every request.
PRICE = {"cost": {"input": "0.15", "output": "0.60"}, "margin_bps": 2000}

PROMPT = "Say hello in one short sentence."
MAX_TOKENS = 64
