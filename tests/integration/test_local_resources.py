"""jobbridge_local.resources against moto server: what exists matches template.yaml's properties.

The expectations are read from template.yaml itself (resolved), so these tests check that the
local stack builds what the template says, not a second copy of it.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobbridge_local.resources import LocalResources, client, create_resources, describe_resources
from jobbridge_local.template import LocalContext, Resolver, Template, load_template

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def template() -> Template:
    return load_template()


@pytest.fixture(scope="module")
def resources(moto_server: Any, template: Template) -> LocalResources:
    return create_resources(moto_server.endpoint_url, template)


@pytest.fixture(scope="module")
def resolver(moto_server: Any, template: Template) -> Resolver:
    return template.resolver(LocalContext(endpoint_url=moto_server.endpoint_url))


@pytest.fixture(scope="module")
def ddb(moto_server: Any) -> Any:
    return client("dynamodb", moto_server.endpoint_url, "us-east-1")


@pytest.fixture(scope="module")
def sqs(moto_server: Any) -> Any:
    return client("sqs", moto_server.endpoint_url, "us-east-1")


def _props(template: Template, resolver: Resolver, logical_id: str) -> dict[str, Any]:
    return resolver.resolve(template.resource(logical_id)["Properties"])


def _key_schema(schema: list[dict[str, str]]) -> list[tuple[str, str]]:
    return [(k["AttributeName"], k["KeyType"]) for k in schema]


def test_jobs_table_keys_and_attributes_match_the_template(template, resolver, resources, ddb) -> None:
    props = _props(template, resolver, "JobsTable")
    table = ddb.describe_table(TableName=resources.table("JobsTable").name)["Table"]

    assert _key_schema(table["KeySchema"]) == _key_schema(props["KeySchema"]) == [("job_id", "HASH")]
    assert {(a["AttributeName"], a["AttributeType"]) for a in table["AttributeDefinitions"]} == {
        (a["AttributeName"], a["AttributeType"]) for a in props["AttributeDefinitions"]
    }
    assert table["BillingModeSummary"]["BillingMode"] == props["BillingMode"]


def test_jobs_table_gsis_match_the_template(template, resolver, resources, ddb) -> None:
    props = _props(template, resolver, "JobsTable")
    table = ddb.describe_table(TableName=resources.table("JobsTable").name)["Table"]

    actual = {g["IndexName"]: g for g in table["GlobalSecondaryIndexes"]}
    expected = {g["IndexName"]: g for g in props["GlobalSecondaryIndexes"]}
    assert set(actual) == set(expected) == {"tenant-created-index", "active-index"}  # docs/CONTRACTS.md
    for name, gsi in expected.items():
        assert _key_schema(actual[name]["KeySchema"]) == _key_schema(gsi["KeySchema"])
        assert actual[name]["Projection"]["ProjectionType"] == gsi["Projection"]["ProjectionType"]
        assert sorted(actual[name]["Projection"].get("NonKeyAttributes", [])) == sorted(
            gsi["Projection"].get("NonKeyAttributes", [])
        )


def test_jobs_table_stream_ttl_sse_pitr_match_the_template(template, resolver, resources, ddb) -> None:
    props = _props(template, resolver, "JobsTable")
    name = resources.table("JobsTable").name
    table = ddb.describe_table(TableName=name)["Table"]

    assert table["StreamSpecification"] == {
        "StreamEnabled": True,
        "StreamViewType": props["StreamSpecification"]["StreamViewType"],
    }
    assert resources.table("JobsTable").stream_arn == table["LatestStreamArn"]

    ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
    assert ttl["AttributeName"] == props["TimeToLiveSpecification"]["AttributeName"] == "expires_at"
    assert ttl["TimeToLiveStatus"] == "ENABLED"

    assert table["SSEDescription"]["Status"] == "ENABLED"
    pitr = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
    assert pitr["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"] == "ENABLED"
    assert table["DeletionProtectionEnabled"] is props["DeletionProtectionEnabled"]


def test_every_template_queue_exists_with_its_attributes(template, resolver, resources, sqs) -> None:
    queue_ids = list(template.resources_of_type("AWS::SQS::Queue"))
    assert set(resources.queues) == set(queue_ids)
    for logical_id in queue_ids:
        props = _props(template, resolver, logical_id)
        info = resources.queue(logical_id)
        assert info.name == props["QueueName"]
        attributes = sqs.get_queue_attributes(QueueUrl=info.url, AttributeNames=["All"])["Attributes"]
        assert attributes["QueueArn"] == info.arn
        for key in ("MessageRetentionPeriod", "VisibilityTimeout", "DelaySeconds"):
            if key in props:
                assert attributes[key] == str(props[key]), (logical_id, key)
        assert attributes["SqsManagedSseEnabled"] == str(props.get("SqsManagedSseEnabled", True)).lower()


def test_route_queues_redrive_to_their_dlqs(template, resolver, resources, sqs) -> None:
    # docs/CONTRACTS.md: each route queue has its DLQ, maxReceiveCount >= 5, DLQ keeps 14 days > 4.
    for source, dlq in (
        ("PublicLambdaQueue", "PublicLambdaDLQ"),
        ("PublicBatchQueue", "PublicBatchDLQ"),
        ("PrivateQueue", "PrivateDLQ"),
    ):
        props = _props(template, resolver, source)
        attributes = sqs.get_queue_attributes(QueueUrl=resources.queue(source).url, AttributeNames=["All"])[
            "Attributes"
        ]
        redrive = json.loads(attributes["RedrivePolicy"])
        assert redrive["deadLetterTargetArn"] == resources.queue(dlq).arn
        assert int(redrive["maxReceiveCount"]) == int(props["RedrivePolicy"]["maxReceiveCount"]) >= 5
        dlq_attributes = sqs.get_queue_attributes(QueueUrl=resources.queue(dlq).url, AttributeNames=["All"])[
            "Attributes"
        ]
        assert int(dlq_attributes["MessageRetentionPeriod"]) == 14 * 86400
        assert int(attributes["MessageRetentionPeriod"]) == 7 * 86400


def test_queue_names_are_the_contract_names(resources) -> None:
    names = {info.name for info in resources.queues.values()}
    assert {
        "jobbridge-public-lambda",
        "jobbridge-public-lambda-dlq",
        "jobbridge-public-batch",
        "jobbridge-public-batch-dlq",
        "jobbridge-private",
        "jobbridge-private-dlq",
    } <= names


def test_creating_again_is_idempotent(moto_server, template, resources) -> None:
    again = create_resources(moto_server.endpoint_url, template)
    assert again.to_dict() == resources.to_dict()


def test_describe_finds_what_create_made(moto_server, template, resources) -> None:
    assert describe_resources(moto_server.endpoint_url, template).to_dict() == resources.to_dict()


def test_attributes_feed_the_resolver(moto_server, template, resources) -> None:
    context = LocalContext(endpoint_url=moto_server.endpoint_url, attributes=resources.attributes())
    spec = template.function_spec("bridge", context)
    assert spec.environment["JOBBRIDGE_TABLE_NAME"] == resources.table("JobsTable").name
    assert spec.environment["JOBBRIDGE_QUEUE_URL_LAMBDA"] == resources.queue("PublicLambdaQueue").url
    (source,) = template.event_sources("bridge", "DynamoDB", context)
    assert source.properties["Stream"] == resources.table("JobsTable").stream_arn
