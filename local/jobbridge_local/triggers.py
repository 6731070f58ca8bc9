"""Which triggers of template.yaml the local stack emulates, and the pollers that emulate them.

Every ``AWS::Serverless::Function`` event of these types gets a poller in the function's own
process (``jobbridge local poll FUNCTION``), so adding a function to the template adds it to
``make run``:

- ``DynamoDB``: a stream poller (``stream_poller.StreamPoller``), invoking in process;
- ``SQS``: an SQS poller (``sqs_poller.SqsPoller``) per queue, invoking through the function's
  execution environments (``instances.FunctionInstances``: one process per concurrent batch);
- ``Schedule`` / ``ScheduleV2``: a timer (``schedule.ScheduleTimer``), invoking in process.

Other event types (HttpApi is served by uvicorn; others are not emulated yet) are ignored here.

Example::

    triggered_functions(load_template())   # {"BridgeFunction": ["DynamoDB"], "WorkerFunction": ["SQS"], ...}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Protocol

from .instances import FunctionInstances
from .invoke import LocalFunction
from .resources import LocalResources
from .schedule import SCHEDULE_EVENT_TYPES, ScheduleMapping, ScheduleTimer
from .sqs_poller import SqsMapping, SqsPoller
from .stream_poller import StreamMapping, StreamPoller
from .template import FUNCTION_TYPES, LocalContext, Template

logger = logging.getLogger(__name__)

EMULATED_EVENT_TYPES = ("DynamoDB", "SQS", *SCHEDULE_EVENT_TYPES)


class Poller(Protocol):
    def run(self) -> None: ...

    def shutdown(self) -> None: ...


def triggered_functions(template: Template) -> dict[str, list[str]]:
    """Functions with at least one emulated trigger -> their trigger types, in template order."""
    found: dict[str, list[str]] = {}
    for logical_id in template.resources_of_type(*FUNCTION_TYPES):
        events = template.function_properties(logical_id).get("Events") or {}
        types = sorted({e.get("Type") for e in events.values() if e.get("Type") in EMULATED_EVENT_TYPES})
        if types:
            found[logical_id] = types
    return found


@dataclass
class FunctionTriggers:
    """The pollers of one function, and the execution environments its SQS pollers invoke."""

    function: LocalFunction
    pollers: list[Poller] = field(default_factory=list)
    instances: FunctionInstances | None = None

    def describe(self) -> list[str]:
        out = []
        for poller in self.pollers:
            if isinstance(poller, StreamPoller):
                out.append(f"stream {poller.mapping.stream_arn}")
            elif isinstance(poller, SqsPoller):
                out.append(f"queue {poller.mapping.queue_arn} (up to {poller.mapping.concurrency} at once)")
            elif isinstance(poller, ScheduleTimer):
                out.append(f"schedule {poller.mapping.expression} every {poller.interval_s:.0f} s")
        return out

    def shutdown(self) -> None:
        for poller in self.pollers:
            poller.shutdown()

    def close(self) -> None:
        if self.instances is not None:
            self.instances.close()


def build_triggers(
    function: LocalFunction,
    template: Template,
    context: LocalContext,
    resources: LocalResources,
    clients: dict[str, Any],
    *,
    schedule_interval_s: float,
    sqs_wait_time_s: int,
) -> FunctionTriggers:
    """The pollers for every emulated event of ``function`` (its environment must already be the
    process's: stream and schedule invocations run in this process).

    ``clients``: boto3 clients for the emulator by service (``dynamodbstreams``, ``sqs``).
    """
    logical_id = function.spec.logical_id
    triggers = FunctionTriggers(function)
    function_arn = f"arn:aws:lambda:{context.region}:{context.account_id}:function:{function.spec.function_name}"

    def in_process(event: dict[str, Any]) -> Any:
        return function.invoke(event, isolate_environment=False)

    for source in template.event_sources(logical_id, "DynamoDB", context):
        triggers.pollers.append(
            StreamPoller(
                StreamMapping.from_event_source(source, function_arn),
                invoke=in_process,
                streams_client=clients["dynamodbstreams"],
                sqs_client=clients["sqs"],
                region=context.region,
            )
        )

    sqs_mappings = [
        SqsMapping.from_event_source(source, queue_url_of(source.properties["Queue"], resources, clients["sqs"]))
        for source in template.event_sources(logical_id, "SQS", context)
    ]
    if sqs_mappings:
        # One execution environment per batch that may run at once, shared by the function's queues.
        triggers.instances = FunctionInstances(function, sum(m.concurrency for m in sqs_mappings))
        for mapping in sqs_mappings:
            triggers.pollers.append(
                SqsPoller(mapping, triggers.instances.invoke, clients["sqs"], context.region, wait_time_s=sqs_wait_time_s)
            )

    for event_type in SCHEDULE_EVENT_TYPES:
        for source in template.event_sources(logical_id, event_type, context):
            mapping = ScheduleMapping.from_event_source(source, context.stack_name, context.region, context.account_id)
            triggers.pollers.append(ScheduleTimer(mapping, in_process, schedule_interval_s))
    return triggers


def queue_url_of(queue_arn: str, resources: LocalResources, sqs_client: Any) -> str:
    """The URL of the queue an event names by ARN (from the created resources, else SQS)."""
    for queue in resources.queues.values():
        if queue.arn == queue_arn:
            return queue.url
    name, account = queue_arn.rsplit(":", 1)[-1], queue_arn.split(":")[4]
    return sqs_client.get_queue_url(QueueName=name, QueueOwnerAWSAccountId=account)["QueueUrl"]
