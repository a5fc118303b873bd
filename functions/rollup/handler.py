"""Lambda entry point of the scheduled function: settles holds that dead processes left behind and
expires unused starter credits (usage rollups join it with the analytics work)."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools import Logger

from tollgate.container import Services
from tollgate.settings import get_settings

logger = Logger(service="tollgate")
services = Services(get_settings())


@logger.inject_lambda_context
def handler(event: dict[str, Any], context: Any) -> dict[str, int]:
    counts = services.billing.sweep()
    logger.info("sweep finished", extra=counts)
    return counts
