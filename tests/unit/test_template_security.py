"""template.yaml's IAM, read as CloudFormation will: every Allow names its resources and its
actions (no ``"*"`` resource but the documented unavoidable ones, no wildcard action), trust
policies name who may assume a role, and only the agents' role can consume the private queue (its
QueuePolicy denies everyone else, and no other role is granted it).

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


# --- the private queue: the agents' and nobody else's --------------------------------------------------


def test_only_the_agent_role_is_granted_to_consume_the_private_queue():
    granted = set()
    for lid, where, st in statements():
        if where != "identity" or st.get("Effect") != "Allow":
            continue
        if CONSUME & set(as_list(st.get("Action"))) and any(refers_to(r, "PrivateQueue") for r in as_list(st["Resource"])):
            granted.add(lid)
    assert granted == {"AgentRole"}


def test_the_private_queue_policy_denies_consuming_to_everyone_but_the_agent_role():
    policy = resources()["PrivateQueuePolicy"]["Properties"]
    assert [q for q in policy["Queues"] if refers_to(q, "PrivateQueue")], "PrivateQueuePolicy is not on PrivateQueue"
    denies = [st for st in as_list(policy["PolicyDocument"]["Statement"]) if st["Effect"] == "Deny"]
    consume = [st for st in denies if {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}
               <= set(as_list(st["Action"]))]
    assert len(consume) == 1, denies
    deny = consume[0]
    assert deny["Principal"] == "*"
    exempt = deny["Condition"]["StringNotEquals"]["aws:PrincipalArn"]
    assert as_list(exempt) == [{"Fn::GetAtt": ["AgentRole", "Arn"]}], exempt
    # And nothing in the policy allows anyone anything.
    assert all(st["Effect"] == "Deny" for st in as_list(policy["PolicyDocument"]["Statement"]))


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
        test_only_the_agent_role_is_granted_to_consume_the_private_queue()


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
