"""The local DynamoDB applies a conditional write atomically, as DynamoDB does: of two claims of one
QUEUED job made at once, one succeeds and the other is refused by its condition. moto's server runs
each request on a thread and checks a write's condition before it applies the update, with nothing
in between: when a paused API resumed and handled its queued claims together, two claims of one job
both succeeded (attempt 2, two `claimed` entries). Here the window between the check and the update
is widened on purpose, so that the race happens every time unless the writes are serialised."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto.dynamodb.parsing.validators import UpdateExpressionValidator

from jobbridge_local.strict_dynamodb import install


@pytest.fixture
def slow_updates(monkeypatch: pytest.MonkeyPatch) -> None:
    validate = UpdateExpressionValidator.validate

    def slow_validate(self: Any) -> Any:  # runs after the condition held, before the update applies
        time.sleep(0.2)
        return validate(self)

    monkeypatch.setattr(UpdateExpressionValidator, "validate", slow_validate)


def test_two_concurrent_claims_of_one_job_one_wins_the_other_is_refused(stack_name, jobs_table, slow_updates) -> None:
    install()
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    key = {"job_id": {"S": "job-1"}}
    ddb.put_item(TableName=jobs_table, Item={**key, "state": {"S": "QUEUED"}, "attempt": {"N": "0"}})
    together = threading.Barrier(2)

    def claim(owner: str) -> bool:
        together.wait()
        try:
            ddb.update_item(TableName=jobs_table, Key=key,
                            UpdateExpression="SET #state = :running, attempt = attempt + :one, lease_owner = :me",
                            ConditionExpression="#state = :queued",
                            ExpressionAttributeNames={"#state": "state"},
                            ExpressionAttributeValues={":running": {"S": "RUNNING"}, ":queued": {"S": "QUEUED"},
                                                       ":one": {"N": "1"}, ":me": {"S": owner}})
            return True
        except ClientError as exc:
            assert exc.response["Error"]["Code"] == "ConditionalCheckFailedException"
            return False

    with ThreadPoolExecutor(2) as pool:
        won = list(pool.map(claim, ["agent-a", "agent-b"]))

    item = ddb.get_item(TableName=jobs_table, Key=key, ConsistentRead=True)["Item"]
    assert sorted(won) == [False, True]
    assert item["attempt"] == {"N": "1"}
