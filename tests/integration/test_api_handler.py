"""functions/api/app.py's handler (Mangum -> FastAPI) invoked in process with the events/api_*.json
payloads, in gateway auth mode (the tenant comes from the authorizer claims in the event), against
moto server over HTTP."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import pytest

from events import JOB_ID_PLACEHOLDER, api_event, event_names, load_event, with_job_id
from jobbridge.models import Route

PROBLEM_FIELDS = {"type", "title", "status", "detail", "errors"}


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


@pytest.fixture
def call(function_env, module_stack, api_handler, lambda_context):
    """Invoke the API function with an event, under the environment template.yaml gives it."""
    spec = function_env("api", module_stack)

    def invoke(event: dict[str, Any]) -> Answer:
        out = api_handler(event, lambda_context(spec))
        raw = out.get("body") or ""
        text = base64.b64decode(raw).decode() if out.get("isBase64Encoded") else raw
        return Answer(out["statusCode"], {k.lower(): v for k, v in (out.get("headers") or {}).items()}, text)

    return invoke


def assert_problem(answer: Answer, status: int) -> dict[str, Any]:
    assert answer.status == status, answer.text
    assert answer.headers["content-type"].startswith("application/problem+json")
    body = answer.json()
    assert PROBLEM_FIELDS <= set(body) and body["status"] == status
    assert "Traceback" not in answer.text
    return body


def submitted(call, name: str = "api_submit_job", **overrides: Any) -> dict[str, Any]:
    answer = call(load_event(name, **overrides))
    assert answer.status == 202, answer.text
    return answer.json()


# --- one expectation per stored event ------------------------------------------------------------------

EXPECTED_STATUS = {
    "api_submit_job": 202,
    "api_submit_transcode_8k": 202,
    "api_submit_idempotent": 202,
    "api_get_job": 404,  # the placeholder id names no job
    "api_list_jobs": 200,
    "api_cancel_job": 404,
    "api_job_types": 200,
    "api_health": 200,
    "api_submit_invalid_target": 422,
    "api_no_claims": 401,
    # Its caller is a session of the agent role of the stack named "jobbridge" (samconfig.toml's);
    # each test stack has a name of its own, so as stored the caller is another stack's role.
    "api_agent_claim": 403,
    "api_jobs_batch": 200,  # a result per item inside
}


def test_every_api_event_file_has_an_expectation() -> None:
    assert sorted(EXPECTED_STATUS) == event_names("api_")


@pytest.mark.parametrize("name, status", sorted(EXPECTED_STATUS.items()))
def test_each_stored_event_gets_its_status(call, name: str, status: int) -> None:
    answer = call(load_event(name))
    assert answer.status == status, answer.text
    if status >= 400:
        assert_problem(answer, status)
    else:
        assert answer.headers["content-type"] == "application/json"
    # API Gateway's request id is the correlation id when the client sent none
    assert answer.headers["x-correlation-id"] == load_event(name)["requestContext"]["requestId"]


# --- submit ----------------------------------------------------------------------------------------------


def test_submit_job_event_is_accepted_on_lambda_with_a_location(call) -> None:
    answer = call(load_event("api_submit_job"))
    assert answer.status == 202
    body = answer.json()
    assert (body["state"], body["route"]) == ("QUEUED", "lambda")
    assert answer.headers["location"] == body["location"] == f"/jobs/{body['job_id']}"


def test_the_submitted_job_belongs_to_the_claims_tenant(call, module_stack, stack_store) -> None:
    body = submitted(call)
    job = stack_store(module_stack).get(body["job_id"])
    assert job.tenant == load_event("api_submit_job")["requestContext"]["authorizer"]["jwt"]["claims"]["tenant"]
    assert job.params == json.loads(load_event("api_submit_job")["body"])["params"]
    assert job.correlation_id == load_event("api_submit_job")["requestContext"]["requestId"]


def test_the_bulk_submit_event_records_its_25_jobs_once(call, module_stack, stack_store) -> None:
    event = load_event("api_jobs_batch")
    event["requestContext"]["authorizer"]["jwt"]["claims"]["tenant"] = "bulk-tenant"  # its own key space

    first, again = call(event).json()["results"], call(event).json()["results"]

    assert [r["status"] for r in first] == [202] * 25 and [r["status"] for r in again] == [200] * 25
    assert [r["job"]["job_id"] for r in first] == [r["job"]["job_id"] for r in again]
    assert {stack_store(module_stack).get(r["job"]["job_id"]).tenant for r in first} == {"bulk-tenant"}


def test_transcode_8k_event_goes_to_batch(call) -> None:
    assert submitted(call, "api_submit_transcode_8k")["route"] == Route.BATCH.value


def test_idempotent_event_replayed_returns_the_same_job(call) -> None:
    event = load_event("api_submit_idempotent")
    event["requestContext"]["authorizer"]["jwt"]["claims"]["tenant"] = "idem-tenant"  # its own key space
    first = call(event)
    again = call(event)
    assert first.status == again.status == 202
    assert first.json()["job_id"] == again.json()["job_id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers


def test_idempotent_event_with_another_body_is_409(call) -> None:
    event = load_event("api_submit_idempotent")
    event["requestContext"]["authorizer"]["jwt"]["claims"]["tenant"] = "idem-conflict"
    assert call(event).status == 202
    event["body"] = json.dumps({"type": "echo", "params": {"order": 4712}})
    event["headers"]["content-length"] = str(len(event["body"]))
    assert_problem(call(event), 409)


def test_invalid_target_event_is_422_naming_the_field(call) -> None:
    body = assert_problem(call(load_event("api_submit_invalid_target")), 422)
    assert body["errors"][0]["loc"] == ["body", "target"]


def test_no_claims_event_is_401(call) -> None:
    answer = call(load_event("api_no_claims"))
    assert_problem(answer, 401)
    assert answer.headers["www-authenticate"].startswith("Bearer")


def test_a_submit_without_claims_creates_nothing(call, module_stack, stack_store) -> None:
    event = api_event("POST", "/jobs", body={"type": "echo"}, tenant=None)
    assert_problem(call(event), 401)
    page, _ = stack_store(module_stack).list_jobs("acme", limit=100)
    assert event["requestContext"]["requestId"] not in {j.correlation_id for j in page}


# --- the agent routes: only sessions of this stack's agent role -------------------------------------------


def agent_claim(stack, job_id: str, user_arn: str | None = None) -> dict[str, Any]:
    """events/api_agent_claim.json for ``job_id``, signed (as API Gateway reports it) by a session of
    ``stack``'s agent role, or by ``user_arn``."""
    event = with_job_id(load_event("api_agent_claim"), job_id)
    iam = event["requestContext"]["authorizer"]["iam"]
    iam["userArn"] = user_arn or iam["userArn"].replace("/jobbridge-agent/", f"/{stack.name}-agent/")
    return event


@pytest.fixture
def private_job(module_stack, stack_store) -> str:
    from jobbridge.models import JobCreate
    from jobbridge.registry import load_registry
    from jobbridge.service import JobService

    create = JobCreate(type="genome_align", params={"sample_id": "s-1", "duration_s": 0})
    job = JobService(stack_store(module_stack), load_registry()).submit("acme", create).job
    assert job.route is Route.PRIVATE
    return job.job_id


def test_a_session_of_the_agent_role_claims_a_private_job(call, module_stack, private_job) -> None:
    answer = call(agent_claim(module_stack, private_job))

    assert answer.status == 200, answer.text
    assert answer.json()["job_id"] == private_job


@pytest.mark.parametrize("who", [
    "arn:aws:sts::123456789012:assumed-role/ci-deployer/build-42",  # another role of the account
    "arn:aws:iam::123456789012:user/alice",  # an IAM user
    "arn:aws:sts::210987654321:assumed-role/{stack}-agent/4f2a9c0d",  # the same name, another account
    "arn:aws:sts::123456789012:assumed-role/{stack}-agent-x/4f2a9c0d",  # a name that starts like it
    "arn:aws:sts::123456789012:federated-user/{stack}-agent",  # a federated user of that name
    "arn:aws:iam::123456789012:role/{stack}-agent",  # the role's own ARN is never a caller
    "not an arn",
])
def test_any_other_iam_caller_of_the_agent_routes_is_403_and_claims_nothing(call, module_stack, stack_store,
                                                                            private_job, who) -> None:
    # Any principal of the account allowed execute-api:Invoke passes API Gateway's IAM check; the
    # app still refuses it unless it is a session of this stack's agent role.
    answer = call(agent_claim(module_stack, private_job, who.format(stack=module_stack.name)))

    body = assert_problem(answer, 403)
    assert "agent role" in body["detail"]
    job = stack_store(module_stack).get(private_job)
    assert job.state.value == "QUEUED" and job.lease_owner is None


# --- read, list, cancel -------------------------------------------------------------------------------------


def test_get_job_event_with_a_real_id_shows_the_job(call) -> None:
    job_id = submitted(call)["job_id"]
    event = with_job_id(load_event("api_get_job"), job_id)
    assert JOB_ID_PLACEHOLDER not in json.dumps(event)

    answer = call(event)

    assert answer.status == 200
    job = answer.json()
    assert (job["job_id"], job["state"], job["type"]) == (job_id, "QUEUED", "echo")
    assert "tenant" not in job


def test_another_tenants_job_is_404_through_the_gateway_claims(call) -> None:
    job_id = submitted(call)["job_id"]
    event = with_job_id(load_event("api_get_job"), job_id)
    event["requestContext"]["authorizer"]["jwt"]["claims"]["tenant"] = "globex"
    assert_problem(call(event), 404)


def test_list_jobs_event_filters_by_state_and_honours_the_limit(call) -> None:
    tenant = "list-tenant"
    ids = [submitted_as(call, tenant) for _ in range(12)]
    cancel = with_job_id(load_event("api_cancel_job"), ids[0])
    cancel["requestContext"]["authorizer"]["jwt"]["claims"]["tenant"] = tenant
    assert call(cancel).status == 200

    event = load_event("api_list_jobs")
    event["requestContext"]["authorizer"]["jwt"]["claims"]["tenant"] = tenant
    page = call(event).json()

    assert len(page["items"]) == 10
    assert {item["state"] for item in page["items"]} == {"QUEUED"}
    assert [item["job_id"] for item in page["items"]] == list(reversed(ids[2:]))
    assert page["next_cursor"]


def submitted_as(call, tenant: str) -> str:
    answer = call(api_event("POST", "/jobs", body={"type": "echo"}, tenant=tenant))
    assert answer.status == 202, answer.text
    return answer.json()["job_id"]


def test_cancel_job_event_cancels_a_queued_job_and_then_conflicts(call) -> None:
    job_id = submitted(call)["job_id"]
    event = with_job_id(load_event("api_cancel_job"), job_id)

    first = call(event)
    assert first.status == 200
    assert first.json()["state"] == "CANCELLED"
    assert_problem(call(event), 409)


def test_job_types_event_lists_the_builtin_types(call) -> None:
    names = {t["name"] for t in call(load_event("api_job_types")).json()["items"]}
    assert {"echo", "sleep", "fail", "transcode", "genome_align"} <= names


def test_health_event_checks_the_table_and_every_queue(call) -> None:
    body = call(load_event("api_health")).json()
    assert body == {"status": "ok", "checks": {"dynamodb": "ok", "sqs:lambda": "ok", "sqs:batch": "ok",
                                               "sqs:private": "ok"}}


def test_health_names_a_queue_that_does_not_exist(function_env, module_stack, api_handler, lambda_context) -> None:
    missing = module_stack.queue_url(Route.BATCH).rsplit("/", 1)[0] + "/no-such-queue"
    spec = function_env("api", module_stack, JOBBRIDGE_QUEUE_URL_BATCH=missing)

    out = api_handler(load_event("api_health"), lambda_context(spec))

    assert out["statusCode"] == 503
    body = json.loads(base64.b64decode(out["body"]) if out.get("isBase64Encoded") else out["body"])
    assert "sqs:batch" in body["detail"] and "sqs:private" not in body["detail"]


def test_a_body_over_the_limit_is_413(call) -> None:
    event = api_event("POST", "/jobs", body={"type": "echo", "params": {"blob": "x" * (256 * 1024)}})
    assert_problem(call(event), 413)


def test_malformed_json_is_400(call) -> None:
    assert_problem(call(api_event("POST", "/jobs", body='{"type": "echo",')), 400)
