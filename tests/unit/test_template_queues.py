"""template.yaml's queues as the reliability promise needs them: every dead-letter queue is read
by a function or watched by an alarm (a dead letter nobody sees is a job nobody ends), and the
route queues keep a message at least as long as the longest queue-wait deadline a job may have."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jobbridge.models import MAX_QUEUE_WAIT_S
from jobbridge_local.template import load_template

ROUTE_QUEUES = ("PublicLambdaQueue", "PublicBatchQueue", "PrivateQueue")


@lru_cache(maxsize=1)
def resources() -> dict[str, dict[str, Any]]:
    return load_template().resources


def _ref(value: Any) -> str | None:
    """The logical id a !GetAtt X.Arn or !Ref X names."""
    if isinstance(value, dict):
        if "Fn::GetAtt" in value:
            target = value["Fn::GetAtt"]
            return (target.split(".")[0] if isinstance(target, str) else target[0])
        if "Ref" in value:
            return value["Ref"]
    return None


def _walk(value: Any, key: str) -> list[Any]:
    found = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == key:
                found.append(v)
            found.extend(_walk(v, key))
    elif isinstance(value, list):
        for v in value:
            found.extend(_walk(v, key))
    return found


def dead_letter_queues() -> set[str]:
    """Queues that receive what failed elsewhere: redrive targets, on-failure destinations, DLQs."""
    queues = set()
    for resource in resources().values():
        queues |= {_ref(p.get("deadLetterTargetArn")) for p in _walk(resource, "RedrivePolicy") if isinstance(p, dict)}
        queues |= {_ref(d.get("Destination")) for d in _walk(resource, "OnFailure") if isinstance(d, dict)}
        queues |= {_ref(d.get("Arn")) for d in _walk(resource, "DeadLetterConfig") if isinstance(d, dict)}
        queues |= {_ref(d.get("TargetArn")) for d in _walk(resource, "DeadLetterQueue") if isinstance(d, dict)}
    return {q for q in queues if q and resources().get(q, {}).get("Type") == "AWS::SQS::Queue"}


def consumed() -> set[str]:
    found = set()
    for resource in resources().values():
        for event in (resource.get("Properties", {}).get("Events") or {}).values():
            if event.get("Type") == "SQS":
                found.add(_ref(event["Properties"]["Queue"]))
    return found


def alarmed() -> set[str]:
    found = set()
    for resource in resources().values():
        if resource.get("Type") == "AWS::CloudWatch::Alarm":
            props = resource["Properties"]
            if props.get("Namespace") == "AWS/SQS" and props.get("MetricName") == "ApproximateNumberOfMessagesVisible":
                found |= {_ref(d["Value"]) or d["Value"] for d in props.get("Dimensions", []) if d["Name"] == "QueueName"}
    return found


def test_the_template_has_the_dead_letter_queues_we_know_of() -> None:
    assert {"PublicLambdaDLQ", "PublicBatchDLQ", "PrivateDLQ", "BridgeFailureQueue", "BatchEventsDLQ"} <= dead_letter_queues()


def test_every_dead_letter_queue_is_watched_by_an_alarm() -> None:
    assert dead_letter_queues() - alarmed() == set()


def test_every_dead_letter_queue_nothing_consumes_is_at_least_alarmed() -> None:
    assert dead_letter_queues() - consumed() - alarmed() == set()


def test_route_queues_keep_a_message_as_long_as_the_longest_queue_wait() -> None:
    for name in ROUTE_QUEUES:
        assert int(resources()[name]["Properties"]["MessageRetentionPeriod"]) >= MAX_QUEUE_WAIT_S, name
