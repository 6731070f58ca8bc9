"""The local DynamoDB (moto, made strict by jobbridge_local.strict_dynamodb) applies a conditional
write atomically, as DynamoDB does: of concurrent writes with one condition, exactly one applies.
moto checks a write's condition and then applies it with nothing held between, so under load two
claims of one job's attempt both succeeded in the soak (the attempt moved twice, and the two runs
each settled the job: FAILED twice).
https://docs.aws.amazon.com/amazondynamodb/latest/developerguide/Expressions.ConditionExpressions.html
"""

from __future__ import annotations

import sys
import threading
from typing import Any, Iterator

import pytest
from botocore.exceptions import ClientError

CLAIMS = 8
ROUNDS = 20


@pytest.fixture
def eager_thread_switches() -> Iterator[None]:
    """Switch threads as often as CPython allows: the load of a soak, in a unit test."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def _claim(ddb: Any, table: str, job_id: str) -> str:
    try:
        ddb.update_item(TableName=table, Key={"job_id": {"S": job_id}},
                        UpdateExpression="SET #s = :running ADD attempt :one",
                        ConditionExpression="#s = :queued AND attempt = :zero",
                        ExpressionAttributeNames={"#s": "state"},
                        ExpressionAttributeValues={":running": {"S": "RUNNING"}, ":queued": {"S": "QUEUED"},
                                                   ":zero": {"N": "0"}, ":one": {"N": "1"}})
        return "claimed"
    except ClientError as exc:
        return exc.response["Error"]["Code"]


def test_of_concurrent_claims_of_one_attempt_exactly_one_wins(ddb: Any, jobs_table: str, eager_thread_switches: None) -> None:
    for round_no in range(ROUNDS):
        # Given a queued job
        job_id = f"job_race_{round_no}"
        ddb.put_item(TableName=jobs_table, Item={"job_id": {"S": job_id}, "state": {"S": "QUEUED"},
                                                 "attempt": {"N": "0"}, "params": {"S": "é" * 2000}})
        start = threading.Barrier(CLAIMS)
        outcomes: list[str] = []

        def claim() -> None:
            start.wait()
            outcomes.append(_claim(ddb, jobs_table, job_id))

        # When several claims of its attempt race
        threads = [threading.Thread(target=claim) for _ in range(CLAIMS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

        # Then one wins, the others are refused, and the attempt moved once
        assert sorted(outcomes) == ["ConditionalCheckFailedException"] * (CLAIMS - 1) + ["claimed"], round_no
        item = ddb.get_item(TableName=jobs_table, Key={"job_id": {"S": job_id}}, ConsistentRead=True)["Item"]
        assert item["attempt"] == {"N": "1"}, round_no
