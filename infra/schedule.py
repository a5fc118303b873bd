"""The schedule: an EventBridge rule that runs the rollup function every 5 minutes: the hold sweeper,
then the usage rollup (``tollgate.scheduled``).

Holds outlive their process only when it died, and they expire after ``hold_ttl_seconds`` (20 minutes
by default), so a 5-minute period settles an abandoned hold at most ~25 minutes after it was taken.

Failed runs are not lost silently: an event EventBridge could not deliver, and an invocation that
still failed after Lambda's retry (or aged out), land in one encrypted dead-letter queue, which has
its own alarm (``infra/monitoring.py``). Both jobs are idempotent and the next run redoes whatever
a failed one left, so the queue is for noticing, not for replaying.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.nag import acknowledge

SWEEP_PERIOD = Duration.minutes(5)
# EventBridge retries a failed delivery (throttling, service errors) twice; an event older than one
# period is dropped, since the next scheduled run does the same work.
SWEEP_RETRY_ATTEMPTS = 2
SWEEP_MAX_EVENT_AGE = SWEEP_PERIOD
# Lambda retries a failed run once (about a minute later), within one period; then it is dead-lettered.
RUN_RETRY_ATTEMPTS = 1
DEAD_LETTER_RETENTION = Duration.days(14)


class TollgateSchedule(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, rollup: lambda_.IFunction) -> None:
        super().__init__(scope, construct_id)
        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=DEAD_LETTER_RETENTION,
        )
        acknowledge(
            self.dead_letters,
            "AwsSolutions-SQS3",
            "This queue is itself the dead-letter queue of the rollup schedule (EventBridge target and "
            "Lambda on-failure destination); a dead-letter queue of its own would only move the messages.",
        )
        self.rule = events.Rule(
            self,
            "Sweep",
            description="Tollgate: settle abandoned holds, expire unused starter credits, roll up usage",
            schedule=events.Schedule.rate(SWEEP_PERIOD),
            targets=[
                targets.LambdaFunction(
                    rollup,
                    retry_attempts=SWEEP_RETRY_ATTEMPTS,
                    max_event_age=SWEEP_MAX_EVENT_AGE,
                    dead_letter_queue=self.dead_letters,
                )
            ],
        )
        self.async_invoke = lambda_.EventInvokeConfig(
            self,
            "FailedRuns",
            function=rollup,
            retry_attempts=RUN_RETRY_ATTEMPTS,
            max_event_age=SWEEP_PERIOD,
            on_failure=destinations.SqsDestination(self.dead_letters),
        )
