"""events/*.json that the API and bridge tests (and `sam local invoke`) use are real-shaped: they
parse as Powertools' models of the AWS payloads, and agree with themselves and with the code."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

import pytest
from aws_lambda_powertools.utilities.parser.models import APIGatewayProxyEventV2Model, DynamoDBStreamModel

from events import JOB_ID_PLACEHOLDER, api_event, event_names, load_event, stream_record, with_job_id
from jobbridge.dispatch import dispatch_of
from jobbridge.dynamo_codec import decode_item
from jobbridge.ids import is_job_id
from jobbridge.models import Job, JobCreate, Route, State

API_EVENTS = event_names("api_")
STREAM_ARN = re.compile(r"^arn:aws:dynamodb:[a-z0-9-]+:\d{12}:table/[\w.-]+/stream/[\w:.-]+$")


def test_there_is_one_api_event_per_route_and_case() -> None:
    assert API_EVENTS == sorted([
        "api_agent_claim", "api_cancel_job", "api_get_job", "api_health", "api_job_types", "api_jobs_batch",
        "api_list_jobs", "api_no_claims",
        "api_submit_idempotent", "api_submit_invalid_target", "api_submit_job", "api_submit_transcode_8k",
    ])


@pytest.mark.parametrize("name", API_EVENTS)
def test_api_events_are_http_api_payload_v2(name: str) -> None:
    event = load_event(name)
    parsed = APIGatewayProxyEventV2Model.model_validate(event)

    assert event["version"] == "2.0"
    # template.yaml's routes: ANY /{proxy+} (JWT), POST /agent/{proxy+} (IAM)
    prefix = "/agent/" if name.startswith("api_agent") else "/"
    route_key = "POST /agent/{proxy+}" if name.startswith("api_agent") else "ANY /{proxy+}"
    assert event["routeKey"] == event["requestContext"]["routeKey"] == route_key
    assert event["requestContext"]["stage"] == "$default"
    assert parsed.rawPath == parsed.requestContext.http.path
    assert event["pathParameters"] == {"proxy": event["rawPath"].removeprefix(prefix)}
    assert all(header == header.lower() for header in event["headers"])
    assert event["isBase64Encoded"] is False
    assert dict(parse_qsl(event["rawQueryString"])) == (event.get("queryStringParameters") or {})
    if "body" in event:
        assert isinstance(event["body"], str)
        assert event["headers"]["content-type"] == "application/json"
        assert event["headers"]["content-length"] == str(len(event["body"].encode()))
        if name.startswith("api_submit") and name != "api_submit_invalid_target":
            JobCreate.model_validate_json(event["body"])


@pytest.mark.parametrize("name", [n for n in API_EVENTS if n != "api_no_claims" and not n.startswith("api_agent")])
def test_api_events_carry_jwt_authorizer_claims(name: str) -> None:
    event = load_event(name)
    authorizer = event["requestContext"]["authorizer"]
    assert authorizer["jwt"]["scopes"] is None
    assert {"sub", "tenant", "iss", "aud", "exp", "iat"} <= set(authorizer["jwt"]["claims"])
    assert event["headers"]["authorization"].startswith("Bearer ")


def test_the_agent_event_carries_the_iam_authorizer_of_a_role_session() -> None:
    # HTTP API IAM authorization (payload 2.0): requestContext.authorizer.iam, no jwt block
    # https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-develop-integrations-lambda.html
    event = load_event("api_agent_claim")
    authorizer = event["requestContext"]["authorizer"]
    assert set(authorizer) == {"iam"}
    iam = authorizer["iam"]
    assert {"accessKey", "accountId", "callerId", "principalOrgId", "userArn", "userId"} <= set(iam)
    assert iam["userArn"].startswith(f"arn:aws:sts::{iam['accountId']}:assumed-role/jobbridge-agent/")
    assert iam["userId"].split(":")[1] == iam["userArn"].rsplit("/", 1)[1]  # ROLEID:SESSION
    assert event["headers"]["authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_the_no_claims_event_has_no_authorizer_and_no_token() -> None:
    event = load_event("api_no_claims")
    assert "authorizer" not in event["requestContext"]
    assert "authorization" not in event["headers"]


def test_the_invalid_target_event_is_invalid_only_in_its_target() -> None:
    body = json.loads(load_event("api_submit_invalid_target")["body"])
    assert body.pop("target") == "hybrid"
    JobCreate.model_validate(body)


def test_the_idempotent_event_has_a_key_and_the_list_event_a_query() -> None:
    assert load_event("api_submit_idempotent")["headers"]["idempotency-key"]
    assert load_event("api_list_jobs")["queryStringParameters"] == {"state": "QUEUED", "limit": "10"}


@pytest.mark.parametrize("name", ["api_get_job", "api_cancel_job"])
def test_the_placeholder_id_is_a_valid_id_that_tests_replace(name: str) -> None:
    assert is_job_id(JOB_ID_PLACEHOLDER)
    event = with_job_id(load_event(name), "job_0123456789abcdefghjkmnpqrs")
    assert JOB_ID_PLACEHOLDER not in json.dumps(event)
    assert event["rawPath"].startswith("/jobs/job_0123456789abcdefghjkmnpqrs")
    assert event["requestContext"]["http"]["path"] == event["rawPath"]


# --- the loader and factories ----------------------------------------------------------------------


def test_load_event_returns_independent_copies_with_overrides() -> None:
    first = load_event("api_submit_job")
    first["headers"]["x-mutated"] = "yes"
    assert "x-mutated" not in load_event("api_submit_job.json")["headers"]
    assert load_event("api_list_jobs", rawQueryString="limit=1")["rawQueryString"] == "limit=1"


def test_load_event_of_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(FileNotFoundError, match="api_submit_job"):
        load_event("no_such_event")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "POST", "path": "/jobs", "body": {"type": "echo"}, "tenant": "globex",
         "headers": {"Idempotency-Key": "k"}},
        {"method": "GET", "path": "/jobs", "query": {"state": "RUNNING", "limit": 5}},
        {"method": "GET", "path": "/health", "tenant": None},
    ],
)
def test_api_event_factory_builds_valid_payloads(kwargs) -> None:
    event = api_event(**kwargs)
    APIGatewayProxyEventV2Model.model_validate(event)
    assert event["requestContext"]["http"]["method"] == kwargs["method"]
    assert event["rawPath"] == kwargs["path"]
    if kwargs.get("tenant", "acme") is None:
        assert "authorizer" not in event["requestContext"] and "authorization" not in event["headers"]
    else:
        assert event["requestContext"]["authorizer"]["jwt"]["claims"]["tenant"] == kwargs.get("tenant", "acme")
    if "body" in kwargs:
        assert json.loads(event["body"]) == kwargs["body"]
        assert event["headers"]["idempotency-key"] == "k"
    else:
        assert "body" not in event and "content-length" not in event["headers"]
    if "query" in kwargs:
        assert dict(parse_qsl(event["rawQueryString"])) == {"state": "RUNNING", "limit": "5"}


# --- the stream event --------------------------------------------------------------------------------


def test_the_stream_event_is_a_dynamodb_stream_batch() -> None:
    event = load_event("bridge_stream_insert")
    DynamoDBStreamModel.model_validate(event)
    insert, modify = event["Records"]
    for record in (insert, modify):
        assert record["eventSource"] == "aws:dynamodb"
        assert record["awsRegion"] == "us-east-1"
        assert STREAM_ARN.match(record["eventSourceARN"])
        assert record["dynamodb"]["StreamViewType"] == "NEW_AND_OLD_IMAGES"
        assert record["dynamodb"]["Keys"] == {"job_id": record["dynamodb"]["NewImage"]["job_id"]}
    assert int(insert["dynamodb"]["SequenceNumber"]) < int(modify["dynamodb"]["SequenceNumber"])


def test_the_insert_image_is_a_queued_job_as_the_store_writes_it() -> None:
    insert = load_event("bridge_stream_insert")["Records"][0]
    image = insert["dynamodb"]["NewImage"]
    job = Job.model_validate(decode_item(image))

    assert (insert["eventName"], job.state, job.type, job.route) == ("INSERT", State.QUEUED, "echo", Route.LAMBDA)
    assert is_job_id(job.job_id)
    assert job.dispatched_at is None and job.attempt == 0
    assert image["params"].keys() == {"S"}  # params are JSON text
    assert image["active_state"] == {"S": "QUEUED"} and image["due_at"] == {"S": job.created_at}


def test_the_modify_image_is_the_bridges_dispatched_at_write() -> None:
    insert, modify = load_event("bridge_stream_insert")["Records"]
    new, old = modify["dynamodb"]["NewImage"], modify["dynamodb"]["OldImage"]
    assert modify["eventName"] == "MODIFY"
    assert old == insert["dynamodb"]["NewImage"]
    assert set(new) - set(old) == {"dispatched_at"}
    assert {k for k in old if old[k] != new[k]} == {"updated_at"}


def test_the_code_dispatches_the_insert_and_skips_the_modify() -> None:
    insert, modify = load_event("bridge_stream_insert")["Records"]
    dispatch = dispatch_of(insert)
    assert dispatch is not None
    assert (dispatch.job_id, dispatch.route, dispatch.attempt) == (
        insert["dynamodb"]["Keys"]["job_id"]["S"], Route.LAMBDA, 0)
    assert dispatch.record_id == insert["dynamodb"]["SequenceNumber"]
    assert dispatch_of(modify) is None


def test_stream_record_factory_keeps_the_stored_shape() -> None:
    image = load_event("bridge_stream_insert")["Records"][0]["dynamodb"]["NewImage"]
    record = stream_record(image, sequence_number="42", event_name="MODIFY", old_image=image)
    DynamoDBStreamModel.model_validate({"Records": [record]})
    assert record["dynamodb"]["SequenceNumber"] == "42" and record["eventName"] == "MODIFY"
