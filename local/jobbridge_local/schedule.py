"""Emulate a SAM ``Schedule`` event (an EventBridge rule on a schedule): invoke a function every N seconds.

In AWS, SAM turns a function's ``Type: Schedule`` event into an ``AWS::Events::Rule`` with the
function as its target; EventBridge invokes it asynchronously with a "Scheduled Event"
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-run-lambda-schedule.html)::

    {"version": "0", "id": "...", "detail-type": "Scheduled Event", "source": "aws.events",
     "account": "123456789012", "time": "2026-11-22T01:50:00Z", "region": "us-east-1",
     "resources": ["arn:aws:events:us-east-1:123456789012:rule/<rule name>"], "detail": {}}

or, when the event sets ``Input``, that JSON instead. Locally the rule's own rate (minutes at the
least) is replaced by ``interval_s`` (the CLI reads ``JOBBRIDGE_SWEEP_INTERVAL_S``, 30 s by default),
so the sweeper's effect shows while you watch. Invocations never overlap here (EventBridge would
start the next one regardless), and a failed invocation is logged, not retried: the next tick is
the retry, where Lambda would retry an asynchronous invocation twice.

The timer is a library class with a lifecycle: ``run()`` blocks until ``shutdown()``, which only
sets a flag. The first invocation comes one interval after ``run()`` starts, as a new rule's does.

Example::

    timer = ScheduleTimer(ScheduleMapping.from_event_source(source), invoke=function.invoke, interval_s=30)
    threading.Thread(target=timer.run).start()
    ...
    timer.shutdown()
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from .template import LOCAL_ACCOUNT_ID, LOCAL_REGION, LOCAL_STACK_NAME, PARTITION, EventSource

logger = logging.getLogger(__name__)

DEFAULT_INTERVAL_SECONDS = 30.0
SCHEDULE_EVENT_TYPES = ("Schedule", "ScheduleV2")

Invoke = Callable[[dict[str, Any]], Any]


@dataclass(frozen=True)
class ScheduleMapping:
    """One schedule rule targeting one function."""

    rule_name: str
    expression: str
    region: str = LOCAL_REGION
    account_id: str = LOCAL_ACCOUNT_ID
    enabled: bool = True
    input: Any = None  # the rule's constant Input, sent instead of the scheduled event
    function_logical_id: str = ""

    @property
    def rule_arn(self) -> str:
        return f"arn:{PARTITION}:events:{self.region}:{self.account_id}:rule/{self.rule_name}"

    @classmethod
    def from_event_source(
        cls,
        source: EventSource,
        stack_name: str = LOCAL_STACK_NAME,
        region: str = LOCAL_REGION,
        account_id: str = LOCAL_ACCOUNT_ID,
    ) -> "ScheduleMapping":
        """From a SAM ``Type: Schedule`` (or ``ScheduleV2``) event whose properties are resolved.

        The rule's name is its ``Name``, else what CloudFormation would generate for SAM's
        ``{Function}{Event}`` rule, without the random suffix.
        https://docs.aws.amazon.com/serverless-application-model/latest/developerguide/sam-property-function-schedule.html
        """
        if source.type not in SCHEDULE_EVENT_TYPES:
            raise ValueError(f"{source.name} is a {source.type} event, not a schedule")
        props = source.properties
        expression = props.get("Schedule") or props.get("ScheduleExpression") or ""
        state = str(props.get("State", "ENABLED")).upper()
        enabled = _truthy(props.get("Enabled", True)) and state == "ENABLED"
        raw_input = props.get("Input")
        return cls(
            rule_name=str(props.get("Name") or f"{stack_name}-{source.function_logical_id}{source.name}"),
            expression=str(expression),
            region=region,
            account_id=account_id,
            enabled=enabled,
            input=json.loads(raw_input) if isinstance(raw_input, str) else raw_input,
            function_logical_id=source.function_logical_id,
        )


def scheduled_event(mapping: ScheduleMapping, now: datetime | None = None) -> dict[str, Any]:
    """The event EventBridge sends a schedule rule's Lambda target."""
    if mapping.input is not None:
        return json.loads(json.dumps(mapping.input))
    moment = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": mapping.account_id,
        "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": mapping.region,
        "resources": [mapping.rule_arn],
        "detail": {},
    }


@dataclass
class ScheduleTimer:
    """Invokes the function with a scheduled event every ``interval_s`` seconds until shutdown."""

    mapping: ScheduleMapping
    invoke: Invoke
    interval_s: float = DEFAULT_INTERVAL_SECONDS
    fired: int = 0
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def run(self) -> None:
        if not self.mapping.enabled:
            logger.info("schedule %s is disabled", self.mapping.rule_name)
            self._stop.wait()
            return
        logger.info(
            "schedule %s (%s) fires every %.0f s locally", self.mapping.rule_name, self.mapping.expression, self.interval_s
        )
        while not self._stop.wait(self.interval_s):
            self.fire_once()

    def shutdown(self) -> None:
        """Ask ``run()`` to return (after the invocation in flight). Idempotent; never blocks."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def fire_once(self) -> Any:
        """One tick: invoke the function with a scheduled event. Returns its response (None on error)."""
        self.fired += 1
        try:
            return self.invoke(scheduled_event(self.mapping))
        except Exception:  # noqa: BLE001 - an asynchronous invocation's error only reaches the logs
            self.failures += 1
            logger.exception("scheduled invocation of %s failed", self.mapping.function_logical_id or self.mapping.rule_name)
            return None


def _truthy(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")
