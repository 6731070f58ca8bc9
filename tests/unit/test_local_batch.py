"""jobbridge_local.local_batch's pure parts: the retry strategy's rules, CloudFormation -> Batch API
shapes, and what it reads from template.yaml (no server, no process)."""

from __future__ import annotations

import pytest

from jobbridge_local.local_batch import api_shape, batch_resources, event_targets, retry_action
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
