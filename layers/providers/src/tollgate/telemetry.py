"""Request metrics for CloudWatch: one embedded-metric-format (EMF) line per settled request.

Emitted from one place, ``Meter.settle`` (every chat, message, embedding and image request ends
there exactly once), so the stream and gateway functions report the same way.

**Flushing.** Powertools' usual ``@metrics.log_metrics`` flushes when a Lambda handler returns,
but the stream function has no handler (uvicorn under the Lambda Web Adapter), and one uvicorn
process serves many requests at once. So each request's metrics are printed right away, with
no state shared between concurrent requests: one JSON line on stdout, which CloudWatch Logs turns
into metrics. The line is Powertools' ``EphemeralMetrics`` document; Powertools builds it once per
dimension set and each request fills in its values (``emf_line``). Setting
``POWERTOOLS_METRICS_DISABLED=true`` silences it (local mode does).

**Dimensions** stay low-cardinality: ``provider`` and ``model``, never tenant or key (those are
in the rollups). A request refused as a bad request or an unknown model (400, 404) reports model
``-``, so model names a client makes up cannot mint metrics; one that never reached a provider
reports provider ``-``. Each line publishes three dimension sets: ``[service]`` (the totals the
alarms watch), ``[provider]`` and ``[provider, model]``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

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
# Units, as Powertools' ``MetricUnit`` values.
COUNT = "Count"
MILLISECONDS = "Milliseconds"


def dimensions(record: UsageRecord) -> dict[str, str]:
    provider = record.provider or NONE
    trusted = record.provider is not None and record.status not in _UNTRUSTED_MODEL_STATUSES
    return {"provider": provider, "model": record.model if trusted else NONE}


def measures(record: UsageRecord) -> tuple[tuple[str, str, int], ...]:
    """The request's metrics: (name, unit, value). The one list of what a request reports."""
    status = record.status
    values = (
        (REQUESTS, COUNT, 1),
        (ERRORS, COUNT, int(status >= 400 and status != CLIENT_CLOSED_REQUEST)),
        (UPSTREAM_ERRORS, COUNT, int(status in UPSTREAM_FAILURE_STATUSES)),
        (DISCONNECTS, COUNT, int(status == CLIENT_CLOSED_REQUEST)),
        (PROMPT_TOKENS, COUNT, record.prompt_tokens),
        (COMPLETION_TOKENS, COUNT, record.completion_tokens),
        (COST, COUNT, record.cost_micros),
        (CHARGED, COUNT, record.charged_micros),
        (ESTIMATED_USAGE, COUNT, int(record.usage_source != "provider")),
        (LATENCY, MILLISECONDS, record.latency_ms),
    )
    if record.ttfb_ms is None:
        return values
    return (*values, (TTFB, MILLISECONDS, record.ttfb_ms))


def request_metrics(record: UsageRecord) -> EphemeralMetrics:
    """The request's metrics as Powertools' own object, ready to flush."""
    return _powertools_metrics(dimensions(record), measures(record), record.created_at_ms)


def emf_line(record: UsageRecord) -> str:
    """``json.dumps(request_metrics(record).serialize_metric_set(), separators=(",", ":"))``, the
    line Powertools would print, without its per-call cost.

    Powertools validates and assembles the document anew for every request (~200 µs here, a tenth
    of a chat request's CPU), and ``json`` then serialises its constant parts again. The document's
    text depends only on the dimensions and on which metrics are present, apart from the timestamp
    and the values: so each such shape is rendered once, by Powertools and ``json``, into constant
    pieces (``_line_template``), and each request writes its numbers between them.
    ``tests/unit/test_telemetry.py`` holds the line equal to Powertools' own, text for text.
    """
    labels = dimensions(record)
    values = measures(record)
    pieces, slots = _line_template(
        labels["provider"], labels["model"], tuple((name, unit) for name, unit, _ in values)
    )
    numbers = [repr(float(value)) for _, _, value in values]  # json writes floats with repr
    timestamp = str(record.created_at_ms)
    out = [pieces[0]]
    for slot, piece in zip(slots, pieces[1:], strict=True):
        out.append(timestamp if slot == _TIMESTAMP else numbers[slot])
        out.append(piece)
    return "".join(out)


_TIMESTAMP = -1


@lru_cache(maxsize=1024)
def _line_template(
    provider: str, model: str, metrics: tuple[tuple[str, str], ...]
) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """One shape's line as constant pieces, and what goes between each two of them: the index of a
    metric's value in ``metrics``, or ``_TIMESTAMP``. Metric values are one-element lists."""
    document = _shape(provider, model, metrics)
    positions = {name: index for index, (name, _) in enumerate(metrics)}
    pieces: list[str] = []
    slots: list[int] = []
    text = "{"
    for number, (key, value) in enumerate(document.items()):
        text += ("," if number else "") + json.dumps(key) + ":"
        if key == "_aws":
            text += "{"
            for inner_number, (inner_key, inner_value) in enumerate(value.items()):
                text += ("," if inner_number else "") + json.dumps(inner_key) + ":"
                if inner_key == "Timestamp":
                    pieces.append(text)
                    slots.append(_TIMESTAMP)
                    text = ""
                else:
                    text += _compact(inner_value)
            text += "}"
        elif key in positions:
            pieces.append(text + "[")
            slots.append(positions[key])
            text = "]"
        else:
            text += _compact(value)
    pieces.append(text + "}")
    return tuple(pieces), tuple(slots)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def record_request(record: UsageRecord) -> None:
    """Prints the request's EMF line, as Powertools' ``flush_metrics`` would. Never raises: metrics
    must not fail a request."""
    from aws_lambda_powertools.metrics.functions import is_metrics_disabled  # lazily: cold start

    try:
        if not is_metrics_disabled():
            print(emf_line(record))
    except Exception:
        logger.warning("request metrics were not emitted", extra={"request_id": record.request_id})


@lru_cache(maxsize=1024)
def _shape(provider: str, model: str, metrics: tuple[tuple[str, str], ...]) -> dict[str, Any]:
    """Powertools' document for one dimension set and list of (metric, unit), values to fill."""
    placeholder = tuple((name, unit, 0) for name, unit in metrics)
    labels = {"provider": provider, "model": model}
    return dict(_powertools_metrics(labels, placeholder, 0).serialize_metric_set())


def _powertools_metrics(
    labels: dict[str, str], values: tuple[tuple[str, str, int], ...], timestamp_ms: int
) -> EphemeralMetrics:
    from aws_lambda_powertools.metrics import EphemeralMetrics  # lazily: cold start

    metrics = EphemeralMetrics(namespace=NAMESPACE, service=SERVICE)
    for name, unit, value in values:
        metrics.add_metric(name=name, unit=unit, value=value)
    metrics.add_dimensions(provider=labels["provider"])
    metrics.add_dimensions(**labels)
    if timestamp_ms:
        metrics.set_timestamp(timestamp_ms)
    return metrics
