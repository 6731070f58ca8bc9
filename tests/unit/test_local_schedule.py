"""jobbridge_local.schedule and .triggers (no network): the template's Schedule event becomes a timer
that invokes the function with EventBridge's scheduled event; every DynamoDB, SQS and Schedule
event of template.yaml gets a poller."""

from __future__ import annotations

import threading
from datetime import datetime, timezone
from typing import Any

from events import load_event
from jobbridge_local.schedule import ScheduleMapping, ScheduleTimer, scheduled_event
from jobbridge_local.template import EventSource, load_template
from jobbridge_local.triggers import triggered_functions


def sweeper_mapping() -> ScheduleMapping:
    (source,) = load_template().event_sources("SweeperFunction", "Schedule")
    return ScheduleMapping.from_event_source(source)


def test_the_sweepers_schedule_comes_from_the_template() -> None:
    mapping = sweeper_mapping()

    assert mapping.expression == "rate(5 minutes)"
    assert mapping.enabled is True
    assert mapping.rule_arn == "arn:aws:events:us-east-1:123456789012:rule/jobbridge-SweeperFunctionSweep"


def test_the_scheduled_event_has_the_shape_of_the_events_file() -> None:
    stored = load_event("schedule_sweeper")

    event = scheduled_event(sweeper_mapping(), now=datetime(2026, 11, 22, 1, 50, tzinfo=timezone.utc))

    assert list(event) == list(stored)
    assert {k: v for k, v in event.items() if k != "id"} == {k: v for k, v in stored.items() if k != "id"}
    assert event["id"] != scheduled_event(sweeper_mapping())["id"]


def test_a_constant_input_replaces_the_scheduled_event() -> None:
    source = EventSource("F", "Tick", "Schedule", {"Schedule": "rate(1 minute)", "Input": '{"full": true}'})

    assert scheduled_event(ScheduleMapping.from_event_source(source)) == {"full": True}


def test_the_timer_invokes_every_interval_until_shutdown() -> None:
    calls: list[dict[str, Any]] = []
    three = threading.Event()

    def invoke(event: dict[str, Any]) -> None:
        calls.append(event)
        if len(calls) == 3:
            three.set()
        if len(calls) == 2:
            raise RuntimeError("an asynchronous invocation's error is only logged")

    timer = ScheduleTimer(sweeper_mapping(), invoke, interval_s=0.05)
    thread = threading.Thread(target=timer.run)
    thread.start()
    assert three.wait(10)
    timer.shutdown()
    timer.shutdown()  # idempotent
    thread.join(5)

    assert not thread.is_alive()
    assert all(c["detail-type"] == "Scheduled Event" and c["source"] == "aws.events" for c in calls)
    assert timer.failures == 1 and timer.fired >= 3


def test_a_disabled_schedule_never_fires() -> None:
    source = EventSource("F", "Tick", "Schedule", {"Schedule": "rate(1 minute)", "State": "DISABLED"})
    calls: list[Any] = []
    timer = ScheduleTimer(ScheduleMapping.from_event_source(source), calls.append, interval_s=0.01)
    thread = threading.Thread(target=timer.run)
    thread.start()
    threading.Event().wait(0.2)
    timer.shutdown()
    thread.join(5)

    assert calls == [] and not thread.is_alive()


def test_every_stream_queue_and_schedule_trigger_of_the_template_gets_a_poller() -> None:
    triggers = triggered_functions(load_template())

    assert triggers["BridgeFunction"] == ["DynamoDB"]
    assert triggers["WorkerFunction"] == ["SQS"]
    assert triggers["DeadLetterFunction"] == ["SQS"]
    assert triggers["SweeperFunction"] == ["Schedule"]
    assert "ApiFunction" not in triggers  # HttpApi events are uvicorn's
