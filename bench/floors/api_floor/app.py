"""The API floor: a bare FastAPI app behind Mangum, one route that makes one boto3 call.

POST /jobs puts the body in DynamoDB (one PutItem); GET /jobs/{id} reads an item back (one
GetItem). No auth, no validation beyond JSON, no logging: the least an API of this stack does.
The client is built lazily, once, as jobbridge's is.
"""

import json
import os
import uuid

import boto3
from boto3.dynamodb.types import TypeDeserializer
from fastapi import FastAPI
from mangum import Mangum

TABLE = os.environ.get("JOBBRIDGE_TABLE_NAME", "jobs")
app = FastAPI()
_client = None
_decode = TypeDeserializer().deserialize


def client():
    global _client
    if _client is None:
        _client = boto3.client("dynamodb")
    return _client


@app.post("/jobs", status_code=202)
def submit(body: dict):
    job_id = "job_" + uuid.uuid4().hex
    client().put_item(TableName=TABLE, Item={"job_id": {"S": job_id}, "state": {"S": "QUEUED"},
                                             "body": {"S": json.dumps(body)}})
    return {"job_id": job_id, "state": "QUEUED"}


@app.get("/jobs/{job_id}")
def get(job_id: str):
    item = client().get_item(TableName=TABLE, Key={"job_id": {"S": job_id}}, ConsistentRead=True).get("Item") or {}
    return {name: _decode(value) for name, value in item.items()}


handler = Mangum(app, lifespan="off")
