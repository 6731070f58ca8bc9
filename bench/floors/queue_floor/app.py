"""The queue floor: a bare Powertools SQS batch handler, one boto3 call per record (an UpdateItem
that marks the record's job done). Partial batch responses, as jobbridge's queue functions."""

import json
import os

import boto3
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

TABLE = os.environ.get("JOBBRIDGE_TABLE_NAME", "jobs")
processor = BatchProcessor(event_type=EventType.SQS)
_client = None


def client():
    global _client
    if _client is None:
        _client = boto3.client("dynamodb")
    return _client


def record_handler(record):
    job_id = json.loads(record.body)["job_id"]
    client().update_item(TableName=TABLE, Key={"job_id": {"S": job_id}}, UpdateExpression="SET #s = :s",
                         ExpressionAttributeNames={"#s": "state"}, ExpressionAttributeValues={":s": {"S": "SUCCEEDED"}})


def handler(event, context):
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
