"""Create template.yaml's tables, queues and buckets in an AWS emulator (moto server).

Everything comes from the template's own resource ``Properties``, resolved with
``template.Resolver``: there is no second, hand-written copy of a key schema or a redrive policy
to drift from what is deployed. CloudFormation property names are mapped to the API's request
shapes here (they differ in places, e.g. ``SSESpecification.SSEEnabled`` -> ``Enabled``).

Idempotent: a resource that already exists is described, not re-created, so ``create_resources``
can run against an emulator that is already up.

Example::

    resources = create_resources("http://127.0.0.1:4566")
    resources.table("JobsTable").stream_arn
    resources.queue("PublicLambdaQueue").url
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Callable

import boto3
from botocore.exceptions import ClientError

from .template import LocalContext, Resolver, Template, load_template

TABLE_TYPE = "AWS::DynamoDB::Table"
QUEUE_TYPE = "AWS::SQS::Queue"
BUCKET_TYPE = "AWS::S3::Bucket"

# moto accepts any access key; these only keep botocore from looking for real credentials.
DUMMY_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@dataclass(frozen=True)
class TableInfo:
    logical_id: str
    name: str
    arn: str
    stream_arn: str | None


@dataclass(frozen=True)
class QueueInfo:
    logical_id: str
    name: str
    url: str
    arn: str


@dataclass(frozen=True)
class BucketInfo:
    logical_id: str
    name: str
    arn: str


@dataclass
class LocalResources:
    """What exists in the emulator, by logical id."""

    endpoint_url: str
    region: str
    tables: dict[str, TableInfo] = field(default_factory=dict)
    queues: dict[str, QueueInfo] = field(default_factory=dict)
    buckets: dict[str, BucketInfo] = field(default_factory=dict)

    def table(self, logical_id: str) -> TableInfo:
        return self.tables[logical_id]

    def queue(self, logical_id: str) -> QueueInfo:
        return self.queues[logical_id]

    def attributes(self) -> dict[str, dict[str, Any]]:
        """Physical facts for ``LocalContext.attributes``: Ref and GetAtt values as created."""
        facts: dict[str, dict[str, Any]] = {}
        for t in self.tables.values():
            facts[t.logical_id] = {"Ref": t.name, "Arn": t.arn}
            if t.stream_arn:
                facts[t.logical_id]["StreamArn"] = t.stream_arn
        for q in self.queues.values():
            facts[q.logical_id] = {"Ref": q.url, "Arn": q.arn, "QueueName": q.name, "QueueUrl": q.url}
        for b in self.buckets.values():
            facts[b.logical_id] = {"Ref": b.name, "Arn": b.arn}
        return facts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "LocalResources":
        return cls(
            endpoint_url=data["endpoint_url"],
            region=data["region"],
            tables={k: TableInfo(**v) for k, v in (data.get("tables") or {}).items()},
            queues={k: QueueInfo(**v) for k, v in (data.get("queues") or {}).items()},
            buckets={k: BucketInfo(**v) for k, v in (data.get("buckets") or {}).items()},
        )


def client(service: str, endpoint_url: str, region: str) -> Any:
    """A boto3 client for the emulator (dummy credentials, explicit endpoint)."""
    return boto3.client(service, endpoint_url=endpoint_url, region_name=region, **DUMMY_CREDENTIALS)


def create_resources(
    endpoint_url: str,
    template: Template | None = None,
    context: LocalContext | None = None,
    client_factory: Callable[[str], Any] | None = None,
) -> LocalResources:
    """Create every table, queue and bucket of ``template`` (default template.yaml), in
    dependency order (a DLQ before the queue whose RedrivePolicy names it)."""
    template = template or load_template()
    context = context or LocalContext(endpoint_url=endpoint_url)
    if context.endpoint_url is None:
        context = replace(context, endpoint_url=endpoint_url)
    make_client = client_factory or (lambda service: client(service, endpoint_url, context.region))
    resolver = template.resolver(context)

    wanted = [
        lid
        for lid in template.resources_of_type(TABLE_TYPE, QUEUE_TYPE, BUCKET_TYPE)
        if resolver.resource_enabled(lid)
    ]
    result = LocalResources(endpoint_url=endpoint_url, region=context.region)
    clients: dict[str, Any] = {}

    def get(service: str) -> Any:
        if service not in clients:
            clients[service] = make_client(service)
        return clients[service]

    for logical_id in template.creation_order(wanted):
        rtype = template.resource(logical_id)["Type"]
        if rtype == TABLE_TYPE:
            result.tables[logical_id] = create_table(get("dynamodb"), resolver, logical_id)
        elif rtype == QUEUE_TYPE:
            result.queues[logical_id] = create_queue(get("sqs"), resolver, logical_id)
        else:
            result.buckets[logical_id] = create_bucket(get("s3"), resolver, logical_id)
    return result


# --------------------------------------------------------------------------------------------
# DynamoDB
# --------------------------------------------------------------------------------------------


def table_request(resolver: Resolver, logical_id: str) -> dict[str, Any]:
    """The CreateTable request for a table resource (CloudFormation -> API names).

    https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-dynamodb-table.html
    https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_CreateTable.html
    """
    props = resolver.resolve(resolver.template.resource(logical_id).get("Properties") or {})
    request: dict[str, Any] = {
        "TableName": resolver.physical_name(logical_id),
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        # CloudFormation's default is PROVISIONED, which then requires ProvisionedThroughput.
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    for key in ("ProvisionedThroughput", "OnDemandThroughput", "WarmThroughput", "TableClass"):
        if key in props:
            request[key] = props[key]
    if props.get("GlobalSecondaryIndexes"):
        # ContributorInsightsSpecification is a CloudFormation-only per-index setting.
        request["GlobalSecondaryIndexes"] = [
            {k: v for k, v in gsi.items() if k != "ContributorInsightsSpecification"}
            for gsi in props["GlobalSecondaryIndexes"]
        ]
    if props.get("LocalSecondaryIndexes"):
        request["LocalSecondaryIndexes"] = props["LocalSecondaryIndexes"]
    stream = props.get("StreamSpecification")
    if stream:
        # CloudFormation infers "enabled" from the presence of the spec; the API needs it said.
        request["StreamSpecification"] = {"StreamEnabled": True, "StreamViewType": stream["StreamViewType"]}
    sse = props.get("SSESpecification")
    if sse:
        # moto stores SSESpecification and reports it in DescribeTable (moto/dynamodb/models/table.py).
        api_sse: dict[str, Any] = {"Enabled": bool(sse.get("SSEEnabled", False))}
        if sse.get("SSEType"):
            api_sse["SSEType"] = sse["SSEType"]
        if sse.get("KMSMasterKeyId"):
            api_sse["KMSMasterKeyId"] = sse["KMSMasterKeyId"]
        request["SSESpecification"] = api_sse
    if "DeletionProtectionEnabled" in props:
        # moto enforces deletion protection on DeleteTable, like DynamoDB.
        request["DeletionProtectionEnabled"] = bool(props["DeletionProtectionEnabled"])
    if props.get("Tags"):
        request["Tags"] = props["Tags"]
    # Not applied locally: ContributorInsightsSpecification, KinesisStreamSpecification,
    # ImportSourceSpecification and ResourcePolicy have no effect an emulated table could show.
    return request


def create_table(ddb: Any, resolver: Resolver, logical_id: str) -> TableInfo:
    request = table_request(resolver, logical_id)
    name = request["TableName"]
    try:
        description = ddb.create_table(**request)["TableDescription"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceInUseException":
            raise
        description = ddb.describe_table(TableName=name)["Table"]

    props = resolver.resolve(resolver.template.resource(logical_id).get("Properties") or {})
    ttl = props.get("TimeToLiveSpecification")
    if ttl:
        # UpdateTimeToLive is a separate call after CreateTable; DynamoDB rejects enabling TTL
        # that is already enabled, so compare first (keeps a re-run idempotent).
        current = ddb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
        enabled = bool(ttl.get("Enabled", False))
        already = current.get("TimeToLiveStatus") in (("ENABLED", "ENABLING") if enabled else ("DISABLED", "DISABLING"))
        if not (already and current.get("AttributeName", ttl["AttributeName"]) == ttl["AttributeName"]):
            ddb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": enabled},
            )
    pitr = props.get("PointInTimeRecoverySpecification")
    if pitr:
        # moto implements UpdateContinuousBackups (it only records the setting).
        ddb.update_continuous_backups(
            TableName=name,
            PointInTimeRecoverySpecification={
                "PointInTimeRecoveryEnabled": bool(pitr.get("PointInTimeRecoveryEnabled", False))
            },
        )
    return TableInfo(
        logical_id=logical_id,
        name=name,
        arn=description["TableArn"],
        stream_arn=description.get("LatestStreamArn"),
    )


# --------------------------------------------------------------------------------------------
# SQS
# --------------------------------------------------------------------------------------------

# CloudFormation property -> SQS attribute of the same name; every attribute value is a string.
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/APIReference/API_CreateQueue.html
_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "KmsMasterKeyId",
    "KmsDataKeyReusePeriodSeconds",
    "SqsManagedSseEnabled",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
)
# Given as JSON objects in CloudFormation, as JSON strings to the API.
_QUEUE_JSON_ATTRIBUTES = ("RedrivePolicy", "RedriveAllowPolicy")


def queue_request(resolver: Resolver, logical_id: str) -> dict[str, Any]:
    """The CreateQueue request for a queue resource.

    https://docs.aws.amazon.com/AWSCloudFormation/latest/UserGuide/aws-resource-sqs-queue.html
    """
    props = resolver.resolve(resolver.template.resource(logical_id).get("Properties") or {})
    attributes: dict[str, str] = {}
    for key in _QUEUE_ATTRIBUTES:
        if key in props:
            value = props[key]
            attributes[key] = ("true" if value else "false") if isinstance(value, bool) else str(value)
    for key in _QUEUE_JSON_ATTRIBUTES:
        if key in props:
            value = props[key]
            attributes[key] = value if isinstance(value, str) else json.dumps(value)
    request: dict[str, Any] = {"QueueName": resolver.physical_name(logical_id), "Attributes": attributes}
    if props.get("Tags"):
        request["tags"] = {tag["Key"]: str(tag["Value"]) for tag in props["Tags"]}
    return request


def create_queue(sqs: Any, resolver: Resolver, logical_id: str) -> QueueInfo:
    request = queue_request(resolver, logical_id)
    name = request["QueueName"]
    try:
        url = sqs.create_queue(**request)["QueueUrl"]
    except ClientError as error:
        # Same name, different attributes (e.g. the template changed): converge, as an update would.
        if error.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        attributes = {k: v for k, v in request["Attributes"].items() if k != "FifoQueue"}
        if attributes:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return QueueInfo(logical_id=logical_id, name=name, url=url, arn=arn)


# --------------------------------------------------------------------------------------------
# S3
# --------------------------------------------------------------------------------------------


def create_bucket(s3: Any, resolver: Resolver, logical_id: str) -> BucketInfo:
    name = resolver.physical_name(logical_id)
    request: dict[str, Any] = {"Bucket": name}
    if resolver.context.region != "us-east-1":
        # us-east-1 is the one region that rejects an explicit LocationConstraint.
        request["CreateBucketConfiguration"] = {"LocationConstraint": resolver.context.region}
    try:
        s3.create_bucket(**request)
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise
    # Encryption, versioning, lifecycle and public-access blocks are not applied: later issues
    # that rely on them add them here from the template's properties.
    return BucketInfo(logical_id=logical_id, name=name, arn=f"arn:aws:s3:::{name}")


def describe_resources(
    endpoint_url: str, template: Template | None = None, context: LocalContext | None = None
) -> LocalResources:
    """What ``create_resources`` would return, for resources that already exist (creates nothing)."""
    template = template or load_template()
    context = context or LocalContext(endpoint_url=endpoint_url)
    resolver = template.resolver(replace(context, endpoint_url=endpoint_url))
    result = LocalResources(endpoint_url=endpoint_url, region=context.region)
    ddb = sqs = None
    for logical_id, resource in template.resources_of_type(TABLE_TYPE, QUEUE_TYPE, BUCKET_TYPE).items():
        if not resolver.resource_enabled(logical_id):
            continue
        name = resolver.physical_name(logical_id)
        if resource["Type"] == TABLE_TYPE:
            ddb = ddb or client("dynamodb", endpoint_url, context.region)
            table = ddb.describe_table(TableName=name)["Table"]
            result.tables[logical_id] = TableInfo(logical_id, name, table["TableArn"], table.get("LatestStreamArn"))
        elif resource["Type"] == QUEUE_TYPE:
            sqs = sqs or client("sqs", endpoint_url, context.region)
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            result.queues[logical_id] = QueueInfo(logical_id, name, url, arn)
        else:
            result.buckets[logical_id] = BucketInfo(logical_id, name, f"arn:aws:s3:::{name}")
    return result
