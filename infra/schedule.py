"""The schedule: an EventBridge rule that runs the rollup function (the hold sweeper) every 5 minutes.

Holds outlive their process only when it died, and they expire after ``hold_ttl_seconds`` (20 minutes
by default), so a 5-minute period settles an abandoned hold at most ~25 minutes after it was taken.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

SWEEP_PERIOD = Duration.minutes(5)
# EventBridge retries a failed delivery (throttling, service errors) twice; an event older than one
# period is dropped, since the next scheduled run does the same work.
SWEEP_RETRY_ATTEMPTS = 2
SWEEP_MAX_EVENT_AGE = SWEEP_PERIOD


class TollgateSchedule(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, rollup: lambda_.IFunction) -> None:
        super().__init__(scope, construct_id)
        self.rule = events.Rule(
            self,
            "Sweep",
            description="Tollgate: settle abandoned holds and expire unused starter credits",
            schedule=events.Schedule.rate(SWEEP_PERIOD),
            targets=[
                targets.LambdaFunction(
                    rollup,
                    retry_attempts=SWEEP_RETRY_ATTEMPTS,
                    max_event_age=SWEEP_MAX_EVENT_AGE,
                )
            ],
        )
