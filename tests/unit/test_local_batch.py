"""jobbridge_local.local_batch's pure parts: the retry strategy's rules, CloudFormation -> Batch API
shapes, what it reads from template.yaml, and the event delivery with its injected losses (no
server, no process)."""

from __future__ import annotations

import pytest

from jobbridge_faults import FaultInjector, parse_spec
from jobbridge_local.local_batch import EventDelivery, api_shape, batch_resources, event_targets, retry_action
from jobbridge_local.template import LocalContext, load_template

# template.yaml's own retry strategy, as the job definitions declare it.
STRATEGY = {"attempts": 2, "evaluateOnExit": [
    {"action": "RETRY", "onStatusReason": "Host EC2*"},
    {"action": "RETRY", "onStatusReason": "Your Spot Task was interrupted*"},
    {"action": "EXIT", "onReason": "*"},
]}


@pytest.mark.parametrize("status_reason, reason, exit_code, expected", [
    ("Host EC2 (instance i-0123456789abcdef0) terminated.", "", None, "RETRY"),
    ("Your Spot Task was interrupted.", "", None, "RETRY"),
    ("Essential container in task exited", "OutOfMemoryError: Container killed due to memory usage", 137, "EXIT"),
    ("Essential container in task exited", "", 1, "EXIT"),
    ("CannotPullContainerError: not found", "", None, "EXIT"),
])
def test_the_templates_retry_strategy_retries_only_lost_hosts(status_reason, reason, exit_code, expected) -> None:
    assert retry_action(STRATEGY, status_reason, reason, exit_code) == expected


def test_a_rule_needs_all_its_conditions_and_no_match_means_retry() -> None:
    strategy = {"evaluateOnExit": [{"action": "exit", "onExitCode": "1*", "onReason": "boom"}]}

    assert retry_action(strategy, "x", "boom", 2) == "RETRY"  # exit code 2 does not match 1*
    assert retry_action(strategy, "x", "other", 12) == "RETRY"  # the reason does not match
    assert retry_action(strategy, "x", "boom", 12) == "EXIT"
    assert retry_action({}, "anything", "", 1) == "RETRY"


def test_cloudformation_names_become_api_names_but_user_keys_stay() -> None:
    shaped = api_shape({"ResourceRequirements": [{"Type": "GPU", "Value": "1"}],
                        "LogConfiguration": {"LogDriver": "awslogs", "Options": {"awslogs-group": "/g"}}})

    assert shaped == {"resourceRequirements": [{"type": "GPU", "value": "1"}],
                      "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/g"}}}


def test_the_templates_queues_definitions_and_event_rule_are_read_as_deployed() -> None:
    template = load_template()
    context = LocalContext(stack_name="unit")

    queues, definitions = batch_resources(template, context)
    targets = event_targets(template, context)

    assert {q.logical_id for q in queues} == {"CpuJobQueue", "GpuJobQueue"}
    by_id = {d.logical_id: d for d in definitions}
    assert by_id["GpuJobDefinition"].name == "unit-gpu"
    assert {"type": "GPU", "value": "1"} in by_id["GpuJobDefinition"].container["resourceRequirements"]
    assert by_id["CpuJobDefinition"].container["command"] == ["python", "-m", "jobbridge.batch_entrypoint"]
    env = {e["name"]: e["value"] for e in by_id["CpuJobDefinition"].container["environment"]}
    assert env["JOBBRIDGE_TABLE_NAME"] == "unit-JobsTable"
    assert all(isinstance(e["value"], str) for e in by_id["CpuJobDefinition"].container["environment"])
    (target,) = targets
    assert target.function_logical_id == "BatchEventsFunction"
    event = {"source": "aws.batch", "detail-type": "Batch Job State Change",
             "detail": {"jobQueue": queues[0].arn, "status": "FAILED"}}
    assert target.matches(event)
    assert not target.matches({**event, "detail": {**event["detail"], "status": "RUNNING"}})
    assert not target.matches({**event, "detail": {**event["detail"], "jobQueue": "arn:aws:batch:::job-queue/other"}})


def _state_change(queue_arn: str, name: str, status: str) -> dict:
    return {"source": "aws.batch", "detail-type": "Batch Job State Change",
            "detail": {"jobQueue": queue_arn, "jobName": name, "jobId": f"id-{name}", "status": status}}


def test_a_dropped_state_change_event_never_reaches_the_function() -> None:
    # Given the template's event rule, and a fault that drops the 1st and 3rd matching event
    template = load_template()
    context = LocalContext(stack_name="unit")
    queues, _ = batch_resources(template, context)
    invoked: list[str] = []
    asked = iter([True, False, True, False])
    delivery = EventDelivery(event_targets(template, context), lambda name, event: invoked.append(
        event["detail"]["jobName"]), retry_delays=(), drop=lambda event: next(asked))

    # When five events come, one of which no rule matches (RUNNING)
    for name, status in (("a", "SUCCEEDED"), ("b", "FAILED"), ("c", "RUNNING"), ("d", "FAILED"), ("e", "SUCCEEDED")):
        delivery(_state_change(queues[0].arn, name, status))
    delivery.close()

    # Then the dropped ones are not delivered, and the fault was asked only about matching events
    assert invoked == ["b", "e"]
    assert [d["jobName"] for d in delivery.dropped] == ["a", "d"]


def test_the_event_drop_fault_is_a_rule_of_the_fault_layer(tmp_path) -> None:
    # batch.events:drop=1/2: the first two events asked about are dropped, then none; counted
    # like every injected fault (the soak adds up the counts files)
    injector = FaultInjector(parse_spec("batch.events:drop=1/2"), seed=1, counts_file=tmp_path / "batch-events.json")

    decisions = [injector.decide("batch", "events", "drop") for _ in range(4)]

    assert decisions == [True, True, False, False]
    assert injector.counts == {"batch.events:drop": 2} and injector.calls == {"batch.events": 4}
    injector.flush(force=True)
    assert '"batch.events:drop": 2' in (tmp_path / "batch-events.json").read_text()


def test_the_local_batch_reads_its_event_drop_fault_from_the_stacks_fault_rules(tmp_path, monkeypatch) -> None:
    from jobbridge_local.cli import _event_drop_fault

    monkeypatch.delenv("JOBBRIDGE_FAULTS", raising=False)
    assert _event_drop_fault() is None  # no faults: every event is delivered
    monkeypatch.setenv("JOBBRIDGE_FAULTS", "sqs.ReceiveMessage:duplicate=0.5")
    assert _event_drop_fault() is None  # faults, but none of this kind

    monkeypatch.setenv("JOBBRIDGE_FAULTS", "sqs.ReceiveMessage:duplicate=0.5,batch.events:drop=1/1")
    monkeypatch.setenv("JOBBRIDGE_FAULTS_DIR", str(tmp_path))
    drop = _event_drop_fault()

    assert [drop({}), drop({})] == [True, False]
    (counts,) = tmp_path.glob("*-batch-events.json")  # beside the other processes' counts, for the soak
    assert '"batch.events:drop": 1' in counts.read_text()
