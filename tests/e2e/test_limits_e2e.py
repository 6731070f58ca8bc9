"""The record's size limits end to end: the `make run` stack (API, bridge, Lambda worker) in a
subprocess, against the strict local DynamoDB, driven over HTTP as a user would. Non-ASCII params
near the documented limit are either accepted and run to a final state, or refused with a 4xx
problem naming the field and the limit; never a 500, never a job lost (docs/RELIABILITY.md, "Limits").
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import pytest

from e2e_stack import RunningStack, start_stack, wait_for
from jobbridge.limits import PARAMS_MAX_BYTES

pytestmark = pytest.mark.e2e

EMOJI = "\U0001F680"  # 4 bytes in UTF-8
FINAL = {"SUCCEEDED", "FAILED", "CANCELLED"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("limits-stack"), functions="ApiFunction,BridgeFunction,WorkerFunction")
    yield running
    running.stop()


@pytest.fixture
def api(stack: RunningStack) -> Iterator[httpx.Client]:
    with stack.client("acme") as client:
        yield client


def emoji_params(stored_bytes: int) -> dict[str, Any]:
    """Params whose JSON text takes ``stored_bytes`` in UTF-8 (emoji, then ASCII to the byte)."""
    room = stored_bytes - len('{"blob":""}')
    params = {"blob": EMOJI * (room // 4) + "x" * (room % 4)}
    assert len(json.dumps(params, separators=(",", ":"), ensure_ascii=False).encode()) == stored_bytes
    return params


def post(api: httpx.Client, params: dict[str, Any]) -> httpx.Response:
    # sent as UTF-8 (as a browser would), not as \\u escapes: the body is under the API's 256 KiB
    body = json.dumps({"type": "echo", "params": params, "target": "public"}, ensure_ascii=False).encode()
    return api.post("/jobs", content=body, headers={"Content-Type": "application/json"})


def test_emoji_params_at_the_limit_are_accepted_and_the_echo_completes_with_them(api) -> None:
    params = emoji_params(PARAMS_MAX_BYTES)

    response = post(api, params)

    assert response.status_code == 202, response.text
    job_id = response.json()["job_id"]
    final = wait_for(lambda: (job := api.get(f"/jobs/{job_id}").json())["state"] in FINAL and job,
                     timeout=120, what="the near-limit echo to end")
    assert final["state"] == "SUCCEEDED", final.get("error")
    assert final["result"] == params


def test_emoji_params_one_byte_over_the_limit_are_413_naming_params_and_make_no_job(api) -> None:
    before = api.get("/jobs", params={"limit": 100}).json()["items"]

    response = post(api, emoji_params(PARAMS_MAX_BYTES + 1))

    assert response.status_code == 413, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["errors"][0]["loc"] == ["body", "params"]
    assert str(PARAMS_MAX_BYTES + 1) in problem["detail"] and str(PARAMS_MAX_BYTES) in problem["detail"]
    assert api.get("/jobs", params={"limit": 100}).json()["items"] == before


def test_emoji_params_that_once_overflowed_dynamodb_are_a_4xx_never_a_500(api) -> None:
    # 60,000 emoji: 240,000 bytes as UTF-8 (a body under 256 KiB); 720,000 as the escapes stored before
    response = post(api, {"blob": EMOJI * 60_000})

    assert response.status_code == 413, response.text
    assert response.json()["errors"][0]["loc"] == ["body", "params"]
