"""Lambda entry point of the scheduled function: settles holds that dead processes left behind,
expires unused starter credits, and rolls usage up into hour and day buckets (``tollgate.scheduled``).

Invoked by hand with ``{"backfill_days": N}``, it re-folds the last N days instead (after an upgrade,
or to rebuild buckets); that, too, is idempotent.
"""

from __future__ import annotations

import time
from typing import Any

from tollgate.startup import cold_start

with cold_start():
    from aws_lambda_powertools import Logger

    from tollgate.container import Services
    from tollgate.scheduled import run_scheduled
    from tollgate.settings import get_settings

    logger = Logger(service="tollgate")
    services = Services(get_settings())


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    days = event.get("backfill_days") if isinstance(event, dict) else None
    if isinstance(days, int) and not isinstance(days, bool) and days > 0:
        since_ms = time.time_ns() // 1_000_000 - days * 86_400_000
        counts = services.rollup.run(since_ms=since_ms).counts()
    else:
        counts = run_scheduled(services)
    logger.info("scheduled run finished", extra=counts)
    return counts
