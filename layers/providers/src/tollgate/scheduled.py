"""What runs on the schedule: every 5 minutes in AWS (``functions/rollup``), on a timer locally.

1. The hold sweeper (``Billing.sweep``): settles holds that dead processes left behind, and
   expires unused starter credits.
2. The rollup (``tollgate.rollup``): folds usage records into hour and day buckets, including
   the hours of any hold the sweeper just settled, however old.

Both are idempotent, so a failed run is simply retried by the next one. A failure of either is
logged and raised once both have had their turn, so the invocation fails (and alarms, and lands in
the dead-letter queue) without one job starving the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tollgate.observability import logger

if TYPE_CHECKING:
    from tollgate.container import Services
    from tollgate.store.ledger import Hold


def run_scheduled(services: Services, now_ms: int | None = None) -> dict[str, int]:
    """Sweeps, then rolls up; returns the counts of both (raises if either failed)."""
    counts: dict[str, int] = {}
    failures: list[Exception] = []
    swept: list[int] = []

    def heard(hold: Hold) -> None:
        swept.append(hold.created_at_ms)

    try:
        counts |= services.billing.sweep(now_ms, on_settled=heard)
    except Exception as error:  # the rollup still runs; this invocation fails below
        logger.exception("sweep failed")
        failures.append(error)
    try:
        counts |= services.rollup.run(now_ms, refold_hours=swept).counts()
    except Exception as error:
        logger.exception("rollup failed")
        failures.append(error)
    if failures:
        raise failures[0]
    return counts
