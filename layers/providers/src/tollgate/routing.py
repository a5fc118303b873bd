"""Routing: retries, fallback and circuit breaking around the provider adapters.

A public model resolves (``ProviderRegistry.resolve``) to a ``Plan``: its deployments (a provider
and the model name that provider knows) in fallback order. ``Router.run`` walks the plan with one
``attempt`` function, which does the provider call (or, for a stream, obtains its first chunk):

* a retryable failure is tried again on the same deployment, at most ``RetryPolicy.max_retries``
  times, after a capped exponential backoff with jitter (or the upstream's ``Retry-After``);
* then, or at once for a failure that only this deployment has (a refused credential, say), the
  next deployment is tried;
* a failure of the request itself (the provider refused it with a 400) ends the walk: another
  deployment would refuse it too;
* no wait ever runs past the request's ``Deadline``, and each attempt is cut off at it;
* every outcome is recorded in a process-wide ``CircuitBreaker``, which takes a deployment out for
  a while after consecutive failures.

The callers decide what an attempt covers, so fallback stops at the first byte: ``ChatCall``
retries a stream only until its first chunk was obtained, never after the client saw output.

What a failure leads to (``disposition``); "retry" is on the same deployment, "fail over" moves
to the next one, "breaker" is what the attempt counts as for the deployment's circuit:

| Failure (status, code)                                 | Retry | Fail over | Breaker |
| ------------------------------------------------------ | ----- | --------- | ------- |
| 5xx, 529, 408, malformed answer (502 upstream_error)   | yes   | yes       | failure |
| Anthropic overloaded (502 upstream_overloaded)         | yes   | yes       | failure |
| refused connection, DNS (502 upstream_unreachable)     | yes   | yes       | failure |
| lost before 1st chunk (502 upstream_disconnected)      | yes   | yes       | failure |
| connect or idle timeout (504 upstream_timeout)         | yes   | yes       | failure |
| upstream 429 (429 upstream_rate_limited)               | yes * | yes       | failure |
| refused credentials (502 upstream_auth_failed)         | no    | yes       | failure |
| account out of quota (502 upstream_quota_exceeded)     | no    | yes       | failure |
| upstream_redirect, _address_forbidden, _unavailable    | no    | yes       | failure |
| provider not configured (503)                          | no    | yes       | failure |
| upstream 404: the provider lacks the model (404)       | no    | yes       | neutral |
| deployment cannot serve it (400 unsupported_*)         | no    | yes       | neutral |
| upstream 400, 409, 413, 422; content filter (its 4xx)  | no    | no        | success |
| anything else                                          | no    | no        | success |

(*) After the upstream's ``Retry-After`` when it is within the policy's cap and the deadline;
otherwise the next deployment is tried at once. A "neutral" outcome neither counts as a failure
nor resets the count; a "success" (the provider answered, even with a refusal) resets it. When
every deployment fails, the client sees the last failure; when every deployment's circuit is
open, a 503 ``no_healthy_deployment`` with ``Retry-After``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Final, Literal, TypeVar

from tollgate.errors import (
    InvalidRequestError,
    RateLimitError,
    ServiceUnavailableError,
    TollgateError,
    UpstreamError,
    UpstreamTimeoutError,
)
from tollgate.observability import logger

if TYPE_CHECKING:
    from tollgate.providers.registry import Deployment, Plan

__all__ = [
    "LAMBDA_CONTEXT_HEADER",
    "CircuitBreaker",
    "CircuitState",
    "Deadline",
    "Disposition",
    "RetryPolicy",
    "Router",
    "disposition",
    "is_retryable",
    "lambda_remaining_seconds",
    "request_deadline",
]

T = TypeVar("T")

#: What an attempt's outcome says about its deployment's health.
Health = Literal["success", "failure", "neutral"]

#: The Lambda Web Adapter forwards the invocation context in this request header (JSON).
LAMBDA_CONTEXT_HEADER: Final = "x-amzn-lambda-context"


# -- What a failure leads to ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Disposition:
    """What the router does after one failed attempt."""

    #: Try the same deployment again (after a backoff), while retries are left.
    retry: bool
    #: Then (or at once, without ``retry``) try the next deployment.
    fail_over: bool
    health: Health


RETRY: Final = Disposition(retry=True, fail_over=True, health="failure")
FAIL_OVER: Final = Disposition(retry=False, fail_over=True, health="failure")
#: The deployment cannot serve this request (it lacks the model or a feature); it is not unwell.
FAIL_OVER_NEUTRAL: Final = Disposition(retry=False, fail_over=True, health="neutral")
FINAL: Final = Disposition(retry=False, fail_over=False, health="success")

#: Upstream failures that only this deployment has: another key or vendor may well work, the
#: same one will not until someone fixes it.
DEPLOYMENT_FAULTS: Final = frozenset(
    {
        "upstream_auth_failed",
        "upstream_quota_exceeded",
        "upstream_redirect",
        "upstream_address_forbidden",
        "upstream_unavailable",
        "upstream_not_configured",
    }
)


def disposition(error: TollgateError) -> Disposition:
    """What the router does after an attempt failed with ``error`` (see the module's table)."""
    if isinstance(error, RateLimitError):
        # Only the upstream's rate limit; Tollgate's own (a tenant's RPM) never reaches a provider.
        return RETRY if error.code == "upstream_rate_limited" else FINAL
    if isinstance(error, UpstreamError):  # UpstreamTimeoutError too
        return FAIL_OVER if error.code in DEPLOYMENT_FAULTS else RETRY
    if isinstance(error, ServiceUnavailableError):
        return FAIL_OVER
    if error.status == 404:
        return FAIL_OVER_NEUTRAL
    if isinstance(error, InvalidRequestError) and (error.code or "").startswith("unsupported_"):
        return FAIL_OVER_NEUTRAL
    return FINAL


def is_retryable(error: TollgateError) -> bool:
    """Whether ``error`` may go away if the same deployment is asked again."""
    return disposition(error).retry


# -- Backoff ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long to wait before asking the same deployment again."""

    #: Retries per deployment after its first attempt.
    max_retries: int = 2
    #: The first retry's delay ceiling, in seconds; it doubles per retry up to ``cap``.
    base: float = 0.25
    #: The longest wait, ``Retry-After`` included: an upstream asking for more is failed over.
    cap: float = 4.0
    #: The random share of each delay (0: none; 1: "full jitter", anywhere in 0..ceiling).
    jitter: float = 0.5

    def backoff(
        self, attempt: int, retry_after: float | None, rng: random.Random, *, remaining: float = math.inf
    ) -> float | None:
        """Seconds to wait before retry number ``attempt`` (1, 2...), or ``None`` when no retry
        fits: the upstream's ``Retry-After`` is longer than ``cap``, or the wait would not end
        before ``remaining`` seconds (the request's deadline) are up.

        >>> RetryPolicy(base=1.0, cap=8.0, jitter=0.0).backoff(3, None, random.Random(0))
        4.0
        >>> RetryPolicy(cap=8.0).backoff(1, 3, random.Random(0), remaining=2.0) is None
        True
        """
        if retry_after is not None:
            if retry_after > self.cap:
                return None
            delay = max(0.0, float(retry_after))
        else:
            ceiling = min(self.cap, self.base * 2.0 ** (max(attempt, 1) - 1))
            delay = ceiling * (1.0 - self.jitter * rng.random())
        return delay if delay < remaining else None


def retry_after_of(error: TollgateError) -> float | None:
    return (
        float(error.retry_after)
        if isinstance(error, RateLimitError) and error.retry_after is not None
        else None
    )


# -- Deadline ------------------------------------------------------------------------------


class Deadline:
    """When a request must be done by, on the monotonic clock.

    >>> Deadline(30.0).remaining() > 29.0
    True
    """

    __slots__ = ("_at", "_clock")

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._at = clock() + max(0.0, seconds)

    def remaining(self) -> float:
        return max(0.0, self._at - self._clock())

    @property
    def expired(self) -> bool:
        return self.remaining() <= 0.0


def lambda_remaining_seconds(
    *, aws_context: Any = None, lambda_context: str | None = None, now: float | None = None
) -> float | None:
    """The invoking Lambda function's remaining time, or ``None`` outside Lambda.

    * Under Mangum, ``aws_context`` is the Python runtime's context object (the ASGI scope's
      ``aws.context``): ``get_remaining_time_in_millis()``.
    * Under the Lambda Web Adapter, ``lambda_context`` is the ``x-amzn-lambda-context`` header: the
      Rust runtime's ``Context`` as JSON, whose ``deadline`` is the epoch millisecond at which
      Lambda stops the function (``{"request_id": ..., "deadline": 1718000000000,
      "invoked_function_arn": ..., "env_config": {...}, ...}``). ``deadline_ms``, the name in the
      adapter's prose docs, is read too.
    """
    if aws_context is not None:
        remaining_ms = getattr(aws_context, "get_remaining_time_in_millis", None)
        if callable(remaining_ms):
            try:
                value = remaining_ms()
            except Exception:  # a context without a working clock is no deadline
                value = None
            if isinstance(value, int | float) and not isinstance(value, bool):
                return max(0.0, value / 1000)
    if lambda_context:
        try:
            parsed = json.loads(lambda_context)
        except ValueError:
            return None
        deadline = None
        if isinstance(parsed, dict):
            deadline = parsed.get("deadline", parsed.get("deadline_ms"))
        if isinstance(deadline, int | float) and not isinstance(deadline, bool) and deadline > 0:
            wall = time.time() if now is None else now
            return max(0.0, deadline / 1000 - wall)
    return None


def request_deadline(
    *,
    timeout: float,
    margin: float,
    aws_context: Any = None,
    lambda_context: str | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Deadline:
    """A request's deadline: the function's remaining time less ``margin`` (kept for settling and
    answering), and never more than ``timeout``.

    The header form can only shorten a request: its value is capped by ``timeout``, so a client
    that forges it (the adapter overwrites it on Lambda) can only cut its own request short.
    """
    remaining = lambda_remaining_seconds(aws_context=aws_context, lambda_context=lambda_context)
    seconds = timeout if remaining is None else min(timeout, remaining - margin)
    return Deadline(seconds, clock=clock)


# -- Circuit breaker -------------------------------------------------------------------------


class CircuitState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(slots=True)
class _Circuit:
    failures: int = 0
    opened_at: float | None = None
    #: A half-open circuit lets one trial through at a time.
    trial: bool = False


class CircuitBreaker:
    """Takes a failing deployment out of service for a while; one per process, in memory.

    ``threshold`` consecutive failures open a deployment's circuit: for ``open_seconds`` it gets
    no requests. Then it is half-open: one trial request goes through; its success closes the
    circuit, its failure opens it again for another ``open_seconds``.

    Keys are deployments, ``(provider name, upstream model)``. Not thread-safe: one event loop
    uses it.
    """

    def __init__(
        self, *, threshold: int = 5, open_seconds: float = 30.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.threshold = max(1, threshold)
        self.open_seconds = open_seconds
        self._clock = clock
        self._circuits: dict[Hashable, _Circuit] = {}

    def state(self, key: Hashable) -> CircuitState:
        circuit = self._circuits.get(key)
        if circuit is None or circuit.opened_at is None:
            return CircuitState.CLOSED
        if self._clock() - circuit.opened_at < self.open_seconds:
            return CircuitState.OPEN
        return CircuitState.HALF_OPEN

    def allow(self, key: Hashable) -> bool:
        """Whether a request may go to ``key`` now. A ``True`` must be followed by one of
        ``record`` (success, failure or neutral)."""
        state = self.state(key)
        if state is CircuitState.CLOSED:
            return True
        if state is CircuitState.OPEN:
            return False
        circuit = self._circuits[key]
        if circuit.trial:
            return False
        circuit.trial = True
        return True

    def retry_in(self, key: Hashable) -> float:
        """Seconds until an open circuit lets a trial through (0 when it would now)."""
        circuit = self._circuits.get(key)
        if circuit is None or circuit.opened_at is None:
            return 0.0
        return max(0.0, circuit.opened_at + self.open_seconds - self._clock())

    def record(self, key: Hashable, health: Health) -> None:
        if health == "success":
            self._circuits.pop(key, None)
            return
        circuit = self._circuits.get(key)
        if health == "neutral":
            if circuit is not None:
                circuit.trial = False
            return
        if circuit is None:
            circuit = self._circuits[key] = _Circuit()
        circuit.failures += 1
        if circuit.trial or (circuit.opened_at is None and circuit.failures >= self.threshold):
            circuit.trial = False
            circuit.opened_at = self._clock()
            logger.warning("circuit opened", extra={"deployment": str(key), "failures": circuit.failures})


# -- The router ------------------------------------------------------------------------------


class Router:
    """Runs one request's attempts over its plan (see the module docstring)."""

    def __init__(
        self,
        policy: RetryPolicy,
        breaker: CircuitBreaker,
        *,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.policy = policy
        self.breaker = breaker
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not a secret
        self._sleep = sleep

    async def run(
        self,
        plan: Plan,
        attempt: Callable[[Deployment], Awaitable[T]],
        *,
        deadline: Deadline,
        request_id: str | None = None,
    ) -> tuple[T, Deployment]:
        """The first successful ``attempt`` and the deployment that served it.

        Raises the last failure when every deployment failed, a 504 when the deadline ran out,
        or a 503 ``no_healthy_deployment`` when every deployment's circuit is open.
        """
        last: TollgateError | None = None
        for deployment in plan.deployments:
            key = deployment.key
            for retry in range(self.policy.max_retries + 1):
                if not self.breaker.allow(key):
                    break
                remaining = deadline.remaining()
                if remaining <= 0.0:
                    self.breaker.record(key, "neutral")
                    raise self._out_of_time(plan, last)
                health: Health = "neutral"
                timer = asyncio.timeout(remaining)
                try:
                    async with timer:
                        result = await attempt(deployment)
                except TimeoutError:
                    if not timer.expired():
                        raise
                    raise self._out_of_time(plan, last) from None
                except TollgateError as error:
                    failed = last = error
                    health = disposition(error).health
                else:
                    health = "success"
                    return result, deployment
                finally:
                    self.breaker.record(key, health)
                verdict = disposition(failed)
                self._log_failure(deployment, failed, retry, request_id)
                if not verdict.fail_over:
                    raise failed
                if not verdict.retry or retry >= self.policy.max_retries:
                    break
                if self.breaker.state(key) is not CircuitState.CLOSED:
                    break  # this failure opened its circuit: no point waiting to be refused
                delay = self.policy.backoff(
                    retry + 1, retry_after_of(failed), self._rng, remaining=deadline.remaining()
                )
                if delay is None:
                    break
                await self._sleep(delay)
        if last is not None:
            raise last
        raise self._no_healthy_deployment(plan)

    def _out_of_time(self, plan: Plan, last: TollgateError | None) -> TollgateError:
        if isinstance(last, UpstreamTimeoutError):
            return last
        return UpstreamTimeoutError(
            f"No deployment of the model '{plan.model}' answered within the request's time limit."
        )

    def _no_healthy_deployment(self, plan: Plan) -> ServiceUnavailableError:
        wait = min((self.breaker.retry_in(deployment.key) for deployment in plan.deployments), default=0.0)
        return ServiceUnavailableError(
            f"The model '{plan.model}' has no healthy deployment right now; retry later.",
            code="no_healthy_deployment",
            headers={"Retry-After": str(max(1, math.ceil(wait)))},
        )

    @staticmethod
    def _log_failure(
        deployment: Deployment, error: TollgateError, retry: int, request_id: str | None
    ) -> None:
        logger.info(
            "upstream attempt failed",
            extra={
                "request_id": request_id,
                "provider": deployment.provider_name,
                "upstream_model": deployment.upstream_model,
                "attempt": retry + 1,
                "status": error.status,
                "code": error.code,
            },
        )
