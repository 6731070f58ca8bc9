"""The hot path end to end: the `make run` stack in a subprocess, over HTTP.

Each example type submitted to each target it allows is recorded with the right route, and its
message reaches that route's queue (through the stream and the bridge); every error case is the
documented 4xx with a problem body.
"""

from __future__ import annotations

import json

import pytest

from e2e_stack import RunningStack, wait_for

pytestmark = pytest.mark.e2e

QUEUE_OF_ROUTE = {"lambda": "PublicLambdaQueue", "batch": "PublicBatchQueue", "private": "PrivateQueue"}

# (type, params, target) -> the route it must get
CASES = [
    ("echo", {"hello": "world"}, "auto", "lambda"),
    ("echo", {"hello": "world"}, "public", "lambda"),
    ("echo", {"hello": "world"}, "private", "private"),
    ("sleep", {"seconds": 1, "steps": 2}, "auto", "lambda"),
    ("sleep", {"seconds": 1200, "steps": 2}, "public", "batch"),
    ("sleep", {"seconds": 1, "steps": 2}, "private", "private"),
    ("fail", {"retryable": False}, "public", "lambda"),
    ("fail", {"retryable": True}, "private", "private"),
    ("transcode", {"video_id": "v1", "resolution": "8K"}, "auto", "batch"),
    ("transcode", {"video_id": "v2", "resolution": "1080p", "hdr": True}, "public", "batch"),
    ("transcode", {"video_id": "v3", "resolution": "4K"}, "auto", "private"),
    ("transcode", {"video_id": "v4", "resolution": "8K"}, "private", "private"),
    ("genome_align", {"sample_id": "s1"}, "auto", "private"),
    ("genome_align", {"sample_id": "s2"}, "private", "private"),
]


def _drain(stack: RunningStack, wanted: set[str]) -> dict[str, tuple[str, dict]]:
    """Read the three route queues until every wanted job's message is found: job_id -> (queue, body)."""
    sqs = stack.aws("sqs")
    found: dict[str, tuple[str, dict]] = {}

    def poll() -> bool:
        for logical_id in QUEUE_OF_ROUTE.values():
            url = stack.queue_url(logical_id)
            for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", []):
                body = json.loads(message["Body"])
                found.setdefault(body["job_id"], (logical_id, body))
                sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])
        return wanted <= set(found)

    wait_for(poll, timeout=30, what=f"messages for {len(wanted)} jobs")
    return found


def test_each_example_type_reaches_the_queue_of_its_route(hot_path_stack: RunningStack):
    submitted: dict[str, str] = {}
    with hot_path_stack.client("acme") as api:
        for job_type, params, target, route in CASES:
            response = api.post("/jobs", json={"type": job_type, "params": params, "target": target})
            assert response.status_code == 202, response.text
            body = response.json()
            assert body["route"] == route, (job_type, params, target, body)
            assert body["state"] == "QUEUED"
            assert response.headers["location"] == f"/jobs/{body['job_id']}"
            submitted[body["job_id"]] = route

        messages = _drain(hot_path_stack, set(submitted))

        for job_id, route in submitted.items():
            queue, body = messages[job_id]
            assert queue == QUEUE_OF_ROUTE[route]
            assert body["route"] == route and body["attempt"] == 0
            assert "params" not in body
            job = wait_for(lambda: (j := api.get(f"/jobs/{job_id}").json()).get("dispatched_at") and j,
                           what=f"dispatched_at of {job_id}")
            assert job["state"] == "QUEUED" and job["route"] == route


def test_idempotency_key_gives_one_job_and_refuses_another_body(hot_path_stack: RunningStack):
    with hot_path_stack.client("acme") as api:
        headers = {"Idempotency-Key": "e2e-order-1"}
        first = api.post("/jobs", json={"type": "echo", "params": {"n": 1}}, headers=headers)
        again = api.post("/jobs", json={"type": "echo", "params": {"n": 1}}, headers=headers)
        other = api.post("/jobs", json={"type": "echo", "params": {"n": 2}}, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json()["job_id"] == again.json()["job_id"]
    assert again.headers.get("idempotent-replayed") == "true"
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")
    assert "Idempotency-Key" in other.json()["detail"]
    messages = _drain(hot_path_stack, {first.json()["job_id"]})
    assert first.json()["job_id"] in messages


def _problem(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert {"type", "title", "status", "detail", "errors"} <= set(body)
    assert "Traceback" not in response.text
    return body


def test_every_bad_input_is_a_named_4xx(hot_path_stack: RunningStack):
    with hot_path_stack.client("acme") as api:
        unknown = _problem(api.post("/jobs", json={"type": "nope"}), 422)
        assert "echo" in unknown["detail"] and "transcode" in unknown["detail"]

        hybrid = _problem(api.post("/jobs", json={"type": "echo", "target": "hybrid"}), 422)
        assert hybrid["errors"][0]["loc"] == ["body", "target"]

        params = _problem(api.post("/jobs", json={"type": "transcode", "params": {"resolution": "16K"}}), 422)
        assert {tuple(e["loc"]) for e in params["errors"]} >= {("body", "params", "video_id"), ("body", "params", "resolution")}

        restricted = _problem(api.post("/jobs", json={"type": "genome_align", "params": {"sample_id": "s"},
                                                      "target": "public"}), 422)
        assert "never leaves private" in restricted["detail"]

        forbidden = _problem(api.post("/jobs", json={"type": "transcode", "params": {"video_id": "v"},
                                                     "data_classification": "confidential", "target": "public"}), 422)
        assert forbidden["errors"][0]["loc"] == ["body", "target"]

        owned = _problem(api.post("/jobs", json={"type": "echo", "state": "SUCCEEDED", "tenant": "other"}), 422)
        assert {e["loc"][-1] for e in owned["errors"]} == {"state", "tenant"}

        _problem(api.post("/jobs", content=b'{"type": "echo",', headers={"content-type": "application/json"}), 400)
        _problem(api.post("/jobs", content=b"[" * 50_000, headers={"content-type": "application/json"}), 400)
        big = _problem(api.post("/jobs", json={"type": "echo", "params": {"blob": "x" * (300 * 1024)}}), 413)
        assert "262144" in big["detail"]
        _problem(api.get("/jobs/job_00000000000000000000000000"), 404)
        _problem(api.get("/jobs?limit=0"), 422)
        _problem(api.get("/jobs?cursor=not-a-cursor"), 400)


def test_no_valid_token_reaches_a_route(hot_path_stack: RunningStack):
    with hot_path_stack.client("acme") as api:
        before = api.get("/jobs?limit=100").json()["items"]
    import httpx

    api_url = hot_path_stack.api_url
    expired = hot_path_stack.token("acme", exp=1, iat=0, nbf=0)
    wrong_audience = hot_path_stack.token("acme", aud="someone-else")
    for headers in ({}, {"Authorization": "Bearer nonsense"}, {"Authorization": f"Bearer {expired}"},
                    {"Authorization": f"Bearer {wrong_audience}"}, {"Authorization": "Basic dXNlcjpwYXNz"}):
        response = httpx.post(api_url + "/jobs", json={"type": "echo"}, headers=headers)
        _problem(response, 401)
        _problem(httpx.get(api_url + "/jobs", headers=headers), 401)
        _problem(httpx.get(api_url + "/health", headers=headers), 401)
    with hot_path_stack.client("acme") as api:
        after = api.get("/jobs?limit=100").json()["items"]
    assert len(after) == len(before), "a request without a valid token created a job"


def test_tenants_cannot_see_or_cancel_each_others_jobs(hot_path_stack: RunningStack):
    with hot_path_stack.client("tenant-a") as a, hot_path_stack.client("tenant-b") as b:
        job_id = a.post("/jobs", json={"type": "echo", "target": "private"}).json()["job_id"]
        _problem(b.get(f"/jobs/{job_id}"), 404)
        _problem(b.post(f"/jobs/{job_id}/cancel"), 404)
        assert job_id not in {j["job_id"] for j in b.get("/jobs?limit=100").json()["items"]}
        assert a.get(f"/jobs/{job_id}").json()["state"] == "QUEUED"


def test_cancel_list_and_health(hot_path_stack: RunningStack):
    with hot_path_stack.client("lister") as api:
        ids = [api.post("/jobs", json={"type": "echo", "params": {"i": i}, "target": "private"}).json()["job_id"]
               for i in range(5)]
        cancelled = api.post(f"/jobs/{ids[0]}/cancel")
        assert cancelled.status_code == 200 and cancelled.json()["state"] == "CANCELLED"
        assert _problem(api.post(f"/jobs/{ids[0]}/cancel"), 409)["title"] == "Job already final"

        seen, cursor = [], None
        while True:
            page = api.get("/jobs", params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
            seen += [j["job_id"] for j in page["items"]]
            cursor = page["next_cursor"]
            if not cursor:
                break
        assert seen == list(reversed(ids)), "newest first, each job exactly once"
        queued = api.get("/jobs", params={"state": "QUEUED"}).json()["items"]
        assert {j["job_id"] for j in queued} == set(ids[1:])

        types = api.get("/job-types").json()["items"]
        assert {t["name"] for t in types} >= {"echo", "sleep", "fail", "transcode", "genome_align"}
        assert all("properties" in t["params_schema"] or t["name"] == "echo" for t in types)

        health = api.get("/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
