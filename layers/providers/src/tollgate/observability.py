"""Powertools logger, shared by every module. Logs are JSON; they never carry request bodies,
headers or credentials, only ids, names, counts and timings."""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="tollgate")
