"""The local stack's DynamoDB refuses what DynamoDB refuses, over HTTP: an item over 400 KB
(409,600 bytes, counted as attribute names plus values in UTF-8) is refused whole by PutItem and
by UpdateItem, with DynamoDB's ValidationException. moto alone applied an oversized UpdateItem in
part (a record flipped to SUCCEEDED with no result) and measured items its own way.
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/ServiceQuotas.html#limits-items
"""

from __future__ import annotations

import uuid
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError

from jobbridge.dynamo_codec import item_size
from jobbridge.limits import DYNAMODB_MAX_ITEM_BYTES
from jobbridge_local.resources import DUMMY_CREDENTIALS

pytestmark = pytest.mark.integration


@pytest.fixture
def table(moto_server: Any) -> tuple[Any, str]:
    ddb = boto3.client("dynamodb", endpoint_url=moto_server.endpoint_url, region_name="us-east-1", **DUMMY_CREDENTIALS)
    name = f"strict-{uuid.uuid4().hex[:8]}"
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     KeySchema=[{"AttributeName": "job_id", "KeyType": "HASH"}],
                     AttributeDefinitions=[{"AttributeName": "job_id", "AttributeType": "S"}])
    return ddb, name


def item_of(total_bytes: int, job_id: str = "job-1") -> dict[str, Any]:
    """An item of exactly ``total_bytes`` as DynamoDB counts them (the padding in 4-byte emoji and ASCII)."""
    base = {"job_id": {"S": job_id}, "state": {"S": "RUNNING"}, "blob": {"S": ""}}
    room = total_bytes - item_size(base)
    base["blob"] = {"S": "\U0001F680" * (room // 4) + "x" * (room % 4)}
    assert item_size(base) == total_bytes
    return base


def read(ddb: Any, name: str, job_id: str = "job-1") -> dict[str, Any]:
    return ddb.get_item(TableName=name, Key={"job_id": {"S": job_id}}, ConsistentRead=True).get("Item", {})


def test_an_item_of_exactly_the_limit_is_stored(table) -> None:
    ddb, name = table
    ddb.put_item(TableName=name, Item=item_of(DYNAMODB_MAX_ITEM_BYTES))
    assert item_size(read(ddb, name)) == DYNAMODB_MAX_ITEM_BYTES


def test_a_put_one_byte_over_the_limit_is_refused_and_stores_nothing(table) -> None:
    ddb, name = table

    with pytest.raises(ClientError) as refused:
        ddb.put_item(TableName=name, Item=item_of(DYNAMODB_MAX_ITEM_BYTES + 1))

    error = refused.value.response["Error"]
    assert (error["Code"], error["Message"]) == ("ValidationException", "Item size has exceeded the maximum allowed size")
    assert read(ddb, name) == {}


def test_an_update_past_the_limit_is_refused_whole_and_the_item_is_unchanged(table) -> None:
    ddb, name = table
    ddb.put_item(TableName=name, Item=item_of(DYNAMODB_MAX_ITEM_BYTES - 100))
    before = read(ddb, name)

    with pytest.raises(ClientError) as refused:
        # the first action fits; the second takes the item past the limit
        ddb.update_item(TableName=name, Key={"job_id": {"S": "job-1"}},
                        UpdateExpression="SET #s = :done, #r = :result",
                        ExpressionAttributeNames={"#s": "state", "#r": "result"},
                        ExpressionAttributeValues={":done": {"S": "SUCCEEDED"}, ":result": {"S": "r" * 200}})

    error = refused.value.response["Error"]
    assert (error["Code"], error["Message"]) == ("ValidationException",
                                                 "Item size to update has exceeded the maximum allowed size")
    assert read(ddb, name) == before  # still RUNNING, no result: nothing applied


def test_an_update_that_stays_within_the_limit_is_applied(table) -> None:
    ddb, name = table
    ddb.put_item(TableName=name, Item=item_of(DYNAMODB_MAX_ITEM_BYTES - 100))

    ddb.update_item(TableName=name, Key={"job_id": {"S": "job-1"}}, UpdateExpression="SET #r = :result",
                    ExpressionAttributeNames={"#r": "result"}, ExpressionAttributeValues={":result": {"S": "r" * 50}})

    assert item_size(read(ddb, name)) == DYNAMODB_MAX_ITEM_BYTES - 100 + len("result") + 50

