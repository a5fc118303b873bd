"""Request metrics for CloudWatch: one embedded-metric-format (EMF) line per settled request.

Emitted from one place, ``Meter.settle`` (every chat, message, embedding and image request ends
there exactly once), so the stream and gateway functions report the same way.

**Flushing.** Powertools' usual ``@metrics.log_metrics`` flushes when a Lambda handler returns,
but the stream function has no handler (uvicorn under the Lambda Web Adapter), and one uvicorn
process serves many requests at once. So each request gets its own ``EphemeralMetrics`` (no state
shared between concurrent requests) and is flushed right away: one JSON line on stdout, which
CloudWatch Logs turns into metrics. Setting ``POWERTOOLS_METRICS_DISABLED=true`` silences it
(local mode does).

**Dimensions** stay low-cardinality: ``provider`` and ``model``, never tenant or key (those are
in the rollups). A request refused as a bad request or an unknown model (400, 404) reports model
``-``, so model names a client makes up cannot mint metrics; one that never reached a provider
reports provider ``-``. Each line publishes three dimension sets: ``[service]`` (the totals the
alarms watch), ``[provider]`` and ``[provider, model]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollgate.observability import logger

if TYPE_CHECKING:
    from aws_lambda_powertools.metrics import EphemeralMetrics

    from tollgate.store.records import UsageRecord

NAMESPACE = "Tollgate"
SERVICE = "tollgate"
NONE = "-"
#: Statuses Tollgate answers when the provider failed (``UpstreamError``, ``UpstreamTimeoutError``).
UPSTREAM_FAILURE_STATUSES = frozenset({502, 504})
_UNTRUSTED_MODEL_STATUSES = frozenset({400, 404})
CLIENT_CLOSED_REQUEST = 499

# Metric names, shared with the dashboard and alarms (infra/monitoring.py).
REQUESTS = "Requests"
ERRORS = "Errors"
UPSTREAM_ERRORS = "UpstreamErrors"
DISCONNECTS = "Disconnects"
PROMPT_TOKENS = "PromptTokens"
COMPLETION_TOKENS = "CompletionTokens"
COST = "CostMicros"
CHARGED = "ChargedMicros"
ESTIMATED_USAGE = "EstimatedUsage"
LATENCY = "Latency"
TTFB = "TimeToFirstByte"


def dimensions(record: UsageRecord) -> dict[str, str]:
    provider = record.provider or NONE
    trusted = record.provider is not None and record.status not in _UNTRUSTED_MODEL_STATUSES
    return {"provider": provider, "model": record.model if trusted else NONE}


def request_metrics(record: UsageRecord) -> EphemeralMetrics:
    """The metrics of one settled request, ready to flush."""
    from aws_lambda_powertools.metrics import EphemeralMetrics, MetricUnit  # lazily: cold start

    metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    status = record.status
    count = MetricUnit.Count
    metrics.add_metric(name=REQUESTS, unit=count, value=1)
    metrics.add_metric(name=ERRORS, unit=count, value=int(status >= 400 and status != CLIENT_CLOSED_REQUEST))
    metrics.add_metric(name=UPSTREAM_ERRORS, unit=count, value=int(status in UPSTREAM_FAILURE_STATUSES))
    metrics.add_metric(name=DISCONNECTS, unit=count, value=int(status == CLIENT_CLOSED_REQUEST))
    metrics.add_metric(name=PROMPT_TOKENS, unit=count, value=record.prompt_tokens)
    metrics.add_metric(name=COMPLETION_TOKENS, unit=count, value=record.completion_tokens)
    metrics.add_metric(name=COST, unit=count, value=record.cost_micros)
    metrics.add_metric(name=CHARGED, unit=count, value=record.charged_micros)
    metrics.add_metric(name=ESTIMATED_USAGE, unit=count, value=int(record.usage_source != "provider"))
    metrics.add_metric(name=LATENCY, unit=MetricUnit.Milliseconds, value=record.latency_ms)
    if record.ttfb_ms is not None:
        metrics.add_metric(name=TTFB, unit=MetricUnit.Milliseconds, value=record.ttfb_ms)
    labels = dimensions(record)
    metrics.add_dimensions(provider=labels["provider"])
    metrics.add_dimensions(**labels)
    metrics.set_timestamp(record.created_at_ms)
    return metrics


def record_request(record: UsageRecord) -> None:
    """Prints the request's EMF line. Never raises: metrics must not fail a request."""
    try:
        request_metrics(record).flush_metrics()
    except Exception:
        logger.warning("request metrics were not emitted", extra={"request_id": record.request_id})
