"""template.yaml's IAM, read as CloudFormation will: every Allow names its resources and its
actions (no ``"*"`` resource but the documented unavoidable ones, no wildcard action), trust
policies name who may assume a role, and each route queue is consumed by its route's consumer only
and sent to by the bridge and the sweeper only (its QueuePolicy denies everyone else, and no other
role is granted it): a public worker cannot receive a private job's message, nor anyone plant one.

checkov (``make check-security``) checks the template against its own rule set; this test holds the
rules that are this project's."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Iterator

import pytest

from jobbridge_local.template import load_template

# (role, Sid) -> why "*" is the only resource these actions accept. Nothing else may use "*".
UNAVOIDABLE_STAR = {
    # X-Ray's PutTraceSegments/PutTelemetryRecords support no resource-level permissions.
    **{(role, "XRay"): "X-Ray PutTraceSegments/PutTelemetryRecords have no resource types"
       for role in ("ApiFunctionRole", "BridgeFunctionRole", "WorkerFunctionRole", "DeadLetterFunctionRole",
                    "SweeperFunctionRole", "BatchSubmitFunctionRole", "BatchEventsFunctionRole")},
    ("BatchExecutionRole", "EcrAuth"): "ecr:GetAuthorizationToken is account-wide: it has no resource type",
    ("BatchSubmitFunctionRole", "ListJobs"): "batch:ListJobs and batch:DescribeJobs support no resource-level permissions",
}
# Managed policies attached to a role, and why (their statements are AWS's, not this template's).
ALLOWED_MANAGED_POLICIES = {
    ("GpuInstanceRole", "AmazonEC2ContainerServiceforEC2Role"):
        "the ECS agent on Batch's GPU instances registers with the cluster Batch creates; AWS's own policy",
}
CONSUME = {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:DeleteMessageBatch", "sqs:ChangeMessageVisibility",
           "sqs:ChangeMessageVisibilityBatch", "sqs:PurgeQueue"}
POLICY_TYPES = {"AWS::SQS::QueuePolicy", "AWS::SNS::TopicPolicy", "AWS::S3::BucketPolicy", "AWS::IAM::Policy",
                "AWS::IAM::ManagedPolicy"}


@lru_cache(maxsize=1)
def resources() -> dict[str, dict[str, Any]]:
    return load_template().resources


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements() -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(resource, where, statement) for every IAM statement in the template."""
    for lid, res in resources().items():
        props = res.get("Properties") or {}
        if res["Type"] == "AWS::IAM::Role":
            for st in as_list((props.get("AssumeRolePolicyDocument") or {}).get("Statement", [])):
                yield lid, "trust", st
            for policy in props.get("Policies") or []:
                for st in as_list(policy["PolicyDocument"]["Statement"]):
                    yield lid, "identity", st
        elif res["Type"] in POLICY_TYPES:
            for st in as_list(props["PolicyDocument"]["Statement"]):
                yield lid, "resource", st


def refers_to(value: Any, logical_id: str) -> bool:
    """Whether a (possibly intrinsic) value names ``logical_id``: Ref, GetAtt or ${Sub}."""
    text = json.dumps(value)
    return (f'"Ref": "{logical_id}"' in text or f'["{logical_id}", ' in text or f'"{logical_id}.' in text
            or f"${{{logical_id}}}" in text or f"${{{logical_id}." in text)


def test_the_template_has_iam_to_check():
    found = list(statements())
    assert len(found) > 20
    assert {"AgentRole", "ApiFunctionRole", "PrivateQueuePolicy"} <= {lid for lid, _, _ in found}


def test_functions_take_their_role_from_the_template_not_inline_policies():
    # SAM policy templates and inline Policies on a function would escape the checks below.
    for lid, res in resources().items():
        if res["Type"] == "AWS::Serverless::Function":
            props = res["Properties"]
            assert "Role" in props, f"{lid} has no explicit Role"
            assert "Policies" not in props, f"{lid} has inline Policies"


def test_every_allow_names_its_resources():
    offenders = []
    for lid, where, st in statements():
        if where == "trust" or st.get("Effect") != "Allow":
            continue
        assert "NotResource" not in st, f"{lid}/{st.get('Sid')}: NotResource in an Allow"
        if where == "resource":
            continue  # a resource policy's resource is the resource it is attached to
        resources_ = as_list(st.get("Resource"))
        assert resources_ and None not in resources_, f"{lid}/{st.get('Sid')}: no Resource"
        if "*" in resources_ and (lid, st.get("Sid")) not in UNAVOIDABLE_STAR:
            offenders.append(f"{lid}/{st.get('Sid')}: {st['Action']}")
    assert not offenders, "Resource \"*\" outside the documented exceptions:\n" + "\n".join(offenders)


def test_every_documented_star_is_still_needed():
    used = {(lid, st.get("Sid")) for lid, where, st in statements() if "*" in as_list(st.get("Resource"))}
    assert set(UNAVOIDABLE_STAR) <= used, f"stale exceptions: {set(UNAVOIDABLE_STAR) - used}"


def test_no_statement_grants_a_wildcard_action():
    for lid, where, st in statements():
        if st.get("Effect") != "Allow":
            continue
        assert "NotAction" not in st, f"{lid}/{st.get('Sid')}: NotAction in an Allow"
        for action in as_list(st.get("Action")):
            assert isinstance(action, str) and "*" not in action, f"{lid}/{st.get('Sid')}: wildcard action {action}"


def test_trust_policies_name_their_principal():
    for lid, where, st in statements():
        if where == "trust":
            principal = st.get("Principal")
            assert principal not in (None, "*") and "*" not in json.dumps(principal), f"{lid}: trusts {principal}"
            assert "Service" in principal and set(principal) == {"Service"}, f"{lid}: trusts {principal}"


def test_an_allowing_resource_policy_names_its_principal_and_source():
    for lid, where, st in statements():
        if where == "resource" and st.get("Effect") == "Allow":
            assert st.get("Principal") not in (None, "*"), f"{lid}/{st.get('Sid')}: allows everyone"
            assert "aws:SourceArn" in json.dumps(st.get("Condition")), f"{lid}/{st.get('Sid')}: no aws:SourceArn"


def test_managed_policies_are_the_documented_ones():
    for lid, res in resources().items():
        for arn in (res.get("Properties") or {}).get("ManagedPolicyArns") or []:
            name = json.dumps(arn).rsplit("/", 1)[-1].strip('"}')
            assert (lid, name) in ALLOWED_MANAGED_POLICIES, f"{lid}: managed policy {name} is not documented here"


# --- the route queues: each one's consumer and nobody else's ----------------------------------------------

# queue -> (its QueuePolicy, the one role that consumes it). Only the bridge and the sweeper send.
ROUTE_QUEUES = {
    "PublicLambdaQueue": ("PublicLambdaQueuePolicy", "WorkerFunctionRole"),
    "PublicBatchQueue": ("PublicBatchQueuePolicy", "BatchSubmitFunctionRole"),
    "PrivateQueue": ("PrivateQueuePolicy", "AgentRole"),
}
SENDERS = ["BridgeFunctionRole", "SweeperFunctionRole"]


def senders(queue: str) -> list[str]:
    """The bridge and the sweeper; on a public queue also its consumer, which sends a fresh copy of a
    message it could not handle through an outage of ours (the agent holds its message instead)."""
    consumer = ROUTE_QUEUES[queue][1]
    return sorted(SENDERS + ([consumer] if consumer != "AgentRole" else []))
SEND = {"sqs:SendMessage", "sqs:SendMessageBatch"}


def identity_grants(actions: set[str], queue: str) -> set[str]:
    """The roles whose identity policies allow one of ``actions`` on ``queue``."""
    granted = set()
    for lid, where, st in statements():
        if where != "identity" or st.get("Effect") != "Allow":
            continue
        if actions & set(as_list(st.get("Action"))) and any(refers_to(r, queue) for r in as_list(st["Resource"])):
            granted.add(lid)
    return granted


def queue_policy_denies(queue: str) -> list[dict[str, Any]]:
    policy_id, _ = ROUTE_QUEUES[queue]
    assert policy_id in resources(), f"{queue} has no QueuePolicy {policy_id}"
    policy = resources()[policy_id]["Properties"]
    assert [q for q in policy["Queues"] if refers_to(q, queue)], f"{policy_id} is not on {queue}"
    found = as_list(policy["PolicyDocument"]["Statement"])
    # Nothing in the policy allows anyone anything.
    assert all(st["Effect"] == "Deny" for st in found), found
    return found


def exempt_roles(deny: dict[str, Any]) -> list[str]:
    assert deny["Principal"] == "*"
    return [arn["Fn::GetAtt"][0] for arn in as_list(deny["Condition"]["StringNotEquals"]["aws:PrincipalArn"])]


@pytest.mark.parametrize("queue", sorted(ROUTE_QUEUES))
def test_only_the_routes_consumer_is_granted_to_consume_its_queue(queue):
    assert identity_grants(CONSUME, queue) == {ROUTE_QUEUES[queue][1]}


@pytest.mark.parametrize("queue", sorted(ROUTE_QUEUES))
def test_only_the_bridge_the_sweeper_and_a_public_consumer_are_granted_to_send_to_a_route_queue(queue):
    assert identity_grants(SEND, queue) == set(senders(queue))


@pytest.mark.parametrize("queue", sorted(ROUTE_QUEUES))
def test_the_queue_policy_denies_consuming_to_everyone_but_the_routes_consumer(queue):
    consume = [st for st in queue_policy_denies(queue)
               if {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"} <= set(as_list(st["Action"]))]
    assert len(consume) == 1, consume
    assert exempt_roles(consume[0]) == [ROUTE_QUEUES[queue][1]]


@pytest.mark.parametrize("queue", sorted(ROUTE_QUEUES))
def test_the_queue_policy_denies_sending_to_everyone_but_the_bridge_the_sweeper_and_a_public_consumer(queue):
    # sqs:SendMessage also governs SendMessageBatch (SQS authorizes the batch as its single action)
    send = [st for st in queue_policy_denies(queue) if "sqs:SendMessage" in as_list(st["Action"])]
    assert len(send) == 1, send
    assert sorted(exempt_roles(send[0])) == senders(queue)


def test_the_agent_role_holds_nothing_but_the_private_queue_and_the_agent_routes():
    for lid, where, st in statements():
        if lid != "AgentRole" or where != "identity":
            continue
        actions = set(as_list(st["Action"]))
        assert all(a.startswith(("sqs:", "execute-api:")) for a in actions), actions
        for resource in as_list(st["Resource"]):
            assert refers_to(resource, "PrivateQueue") or "/POST/agent/" in json.dumps(resource), resource


@pytest.mark.parametrize("role", ["ApiFunctionRole", "WorkerFunctionRole", "BatchJobRole"])
def test_the_checks_see_a_broken_role(monkeypatch, role):
    """The checks are not vacuous: a wildcard action, a "*" resource and a grant of the private
    queue, injected into a role, are each caught."""
    broken = json.loads(json.dumps(resources()))
    policy = broken[role]["Properties"]["Policies"][0]["PolicyDocument"]
    policy["Statement"] = as_list(policy["Statement"]) + [
        {"Sid": "Oops", "Effect": "Allow", "Action": "sqs:*", "Resource": "*"},
        {"Sid": "Steal", "Effect": "Allow", "Action": "sqs:ReceiveMessage", "Resource": {"Fn::GetAtt": ["PrivateQueue", "Arn"]}},
    ]
    monkeypatch.setitem(globals(), "resources", lambda: broken)
    with pytest.raises(AssertionError):
        test_every_allow_names_its_resources()
    with pytest.raises(AssertionError):
        test_no_statement_grants_a_wildcard_action()
    with pytest.raises(AssertionError):
        test_only_the_routes_consumer_is_granted_to_consume_its_queue("PrivateQueue")


# --- checkov's suppressions: each one explained, and each claim they make true -----------------------


def test_every_checkov_suppression_gives_its_reason():
    skips = [(lid, skip) for lid, res in resources().items()
             for skip in ((res.get("Metadata") or {}).get("checkov") or {}).get("skip", [])]
    assert skips, "no suppressions found: is the Metadata still read?"
    for lid, skip in skips:
        assert skip.get("id", "").startswith("CKV"), (lid, skip)
        assert len(skip.get("comment", "").strip()) >= 40, f"{lid}: {skip.get('id')} suppressed without a reason"


def test_what_the_encryption_suppressions_claim_holds():
    for lid, res in resources().items():
        ids = {s["id"] for s in ((res.get("Metadata") or {}).get("checkov") or {}).get("skip", [])}
        props = res.get("Properties") or {}
        if "CKV_AWS_27" in ids:
            assert props.get("SqsManagedSseEnabled") is True, f"{lid} claims SSE-SQS"
        if "CKV_AWS_119" in ids:
            assert props["SSESpecification"]["SSEEnabled"] is True, f"{lid} claims SSE"
        if "CKV_AWS_115" in ids and "ScalingConfig.MaximumConcurrency" in json.dumps(res["Metadata"]):
            events = json.dumps(props.get("Events"))
            assert "MaximumConcurrency" in events, f"{lid} claims a MaximumConcurrency"


# --- the agent routes: the API knows the agent role --------------------------------------------------------


def test_the_api_is_told_the_agent_roles_arn_and_it_is_the_agent_roles_name():
    # The app accepts on /agent/* only sessions of JOBBRIDGE_AGENT_ROLE_ARN (functions/api auth.py):
    # it must name AgentRole exactly, or no agent (or the wrong role) would get through.
    role_name = resources()["AgentRole"]["Properties"]["RoleName"]
    assert role_name == {"Fn::Sub": "${AWS::StackName}-agent"}
    env = resources()["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert env["JOBBRIDGE_AGENT_ROLE_ARN"] == {
        "Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:role/${AWS::StackName}-agent"}


# --- GPU hosts: containers cannot reach the instance role -------------------------------------------------


def test_gpu_hosts_require_imdsv2_with_a_hop_limit_of_one():
    # Batch's GPU jobs run in containers on EC2 hosts whose instance role registers them with ECS.
    # IMDSv2 (a token first) with a response hop limit of 1: the token's PUT answer dies at the
    # container's extra network hop, so job code cannot fetch the instance role's credentials.
    # https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-IMDS-new-instances.html
    env = resources()["GpuComputeEnvironment"]["Properties"]["ComputeResources"]
    template_ref = env["LaunchTemplate"]
    (lid,) = {v["Ref"] for v in template_ref.values() if isinstance(v, dict) and "Ref" in v}
    assert template_ref.get("Version") == {"Fn::GetAtt": [lid, "LatestVersionNumber"]}
    launch_template = resources()[lid]
    assert launch_template["Type"] == "AWS::EC2::LaunchTemplate"
    options = launch_template["Properties"]["LaunchTemplateData"]["MetadataOptions"]
    assert options["HttpTokens"] == "required"
    assert options["HttpPutResponseHopLimit"] == 1
    assert options.get("HttpEndpoint", "enabled") == "enabled"  # the ECS agent on the host needs it


def test_every_launch_template_requires_imdsv2():
    for lid, res in resources().items():
        if res["Type"] == "AWS::EC2::LaunchTemplate":
            options = res["Properties"]["LaunchTemplateData"].get("MetadataOptions") or {}
            assert options.get("HttpTokens") == "required", lid
            assert options.get("HttpPutResponseHopLimit") == 1, lid


# --- job code's credentials: ids are the capability -------------------------------------------------------

# The roles whose runtime also runs job code (the job types' functions, in-thread): the Lambda worker
# and the Batch container. What job code could do with them is what these roles allow.
JOB_CODE_ROLES = ("WorkerFunctionRole", "BatchJobRole")


@pytest.mark.parametrize("role", JOB_CODE_ROLES)
def test_job_code_credentials_reach_a_job_only_by_its_id(role):
    # GetItem/UpdateItem on the table itself: a job is reached only by its id (80 random bits), never
    # found. No Query/Scan/BatchGetItem/PartiQL, no index, no stream: nothing enumerates other
    # tenants' jobs. docs/SECURITY.md ("Job code") says why this is the boundary and what remains.
    table_actions = set()
    for lid, where, st in statements():
        if lid != role or where != "identity" or st.get("Effect") != "Allow":
            continue
        actions = set(as_list(st["Action"]))
        dynamodb = {a for a in actions if a.startswith("dynamodb:")}
        if dynamodb:
            assert as_list(st["Resource"]) == [{"Fn::GetAtt": ["JobsTable", "Arn"]}], st
            table_actions |= dynamodb
        assert not any(refers_to(r, q) for r in as_list(st["Resource"])
                       for q in ("PrivateQueue", "PrivateDLQ", "PublicBatchQueue" if role == "WorkerFunctionRole"
                                 else "PublicLambdaQueue")), st
    assert table_actions == {"dynamodb:GetItem", "dynamodb:UpdateItem"}
