"""The agent's HTTP client of the /agent routes: the runner's Lifecycle, status codes mapped to
domain errors, retries with full-jitter backoff, Bearer and SigV4 auth. No network: the
connections are fakes that answer from a script."""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

import pytest
from botocore.credentials import Credentials

from jobbridge.config import Settings
from jobbridge.errors import DependencyUnavailable, InvalidTransition, JobNotFound, StaleAttempt
from jobbridge.limits import RESULT_MAX_BYTES
from jobbridge.models import JobError, Progress, State
from jobbridge_agent.api import AgentApi, BearerToken, NotAuthorized, SigV4, _Pool
from jobbridge_agent.backoff import Backoff

JOB_ID = "job_01jbxq2a3b4c5d6e7f8g9h0j1k"
AGENT_JOB = {"job_id": JOB_ID, "type": "sleep", "params": {"seconds": 1}, "attempt": 1, "max_attempts": 3,
             "timeout_s": 60, "lease_owner": "agent:a1", "lease_expires_at": "2026-01-01T00:01:00.000Z",
             "cancel_requested": False, "correlation_id": "c1", "state": "RUNNING", "tenant": "acme",
             "route": "private", "created_at": "2026-01-01T00:00:00.000Z"}


def public(state: str, **extra: Any) -> dict[str, Any]:
    return {"job_id": JOB_ID, "type": "sleep", "state": state, "route": "private", "params": {"seconds": 1},
            "priority": 0, "requirements": {}, "data_classification": "internal", "attempt": 1, "max_attempts": 3,
            "cancel_requested": False, "created_at": "2026-01-01T00:00:00.000Z", **extra}


class FakeResponse:
    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None, close: bool = False) -> None:
        self.status = status
        self._body = body if isinstance(body, bytes) else json.dumps(body).encode()
        self._headers = headers or {}
        self.will_close = close

    def read(self) -> bytes:
        return self._body

    def getheaders(self) -> list[tuple[str, str]]:
        return list(self._headers.items())


class Server:
    """Answers requests in order from a script of FakeResponse or exceptions."""

    def __init__(self, *script: Any) -> None:
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        self.connections = 0

    def connection(self) -> "FakeConnection":
        self.connections += 1
        return FakeConnection(self)


class FakeConnection:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.closed = False

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        self.server.requests.append({"method": method, "path": path, "body": json.loads(body), "headers": headers,
                                     "raw": body})
        self._next = self.server.script.pop(0)
        if isinstance(self._next, BaseException):
            raise self._next

    def getresponse(self) -> FakeResponse:
        return self._next

    def close(self) -> None:
        self.closed = True


def client(server: Server, *, auth: Any = None, attempts: int = 4, sleeps: list[float] | None = None,
           rng: float = 0.5) -> AgentApi:
    recorded = sleeps if sleeps is not None else []
    api = AgentApi("https://api.example.com/prod", auth or BearerToken(token="tok"), max_attempts=attempts,
                   backoff=Backoff(0.5, 8.0, rng=lambda: rng), sleep=recorded.append)
    api._pool = _Pool(server.connection, max_idle=4)
    return api


def test_claim_posts_the_message_attempt_and_returns_the_job() -> None:
    server = Server(FakeResponse(200, AGENT_JOB))
    job = client(server).claim(JOB_ID, "agent:a1", 60.0, expected_attempt=0)
    assert job.job_id == JOB_ID and job.state is State.RUNNING and job.attempt == 1 and job.tenant == "acme"
    request = server.requests[0]
    assert request["method"] == "POST" and request["path"] == f"/prod/agent/jobs/{JOB_ID}/claim"
    assert request["body"] == {"attempt": 0, "lease_s": 60}
    assert request["headers"]["Authorization"] == "Bearer tok"
    assert request["headers"]["Host"] == "api.example.com"


@pytest.mark.parametrize(("status", "action", "error"), [
    (404, "claim", JobNotFound), (409, "claim", InvalidTransition),
    (404, "complete", JobNotFound), (409, "complete", StaleAttempt), (409, "fail", StaleAttempt),
    (409, "cancelled", StaleAttempt), (401, "claim", NotAuthorized), (403, "heartbeat", NotAuthorized),
    (422, "fail", DependencyUnavailable),
])
def test_status_codes_become_domain_errors_without_retries(status: int, action: str, error: type) -> None:
    server = Server(FakeResponse(status, {"detail": "nope"}))
    api = client(server)
    call = {
        "claim": lambda: api.claim(JOB_ID, "o", 60, 0),
        "heartbeat": lambda: api.heartbeat(JOB_ID, 1, "o", 60),
        "complete": lambda: api.complete(JOB_ID, 1, {"ok": True}),
        "fail": lambda: api.fail(JOB_ID, 1, JobError(type="X", message="m")),
        "cancelled": lambda: api.acknowledge_cancel(JOB_ID, 1),
    }[action]
    with pytest.raises(error) as caught:
        call()
    assert len(server.requests) == 1
    if action == "claim" and status == 409:
        assert not isinstance(caught.value, StaleAttempt)  # refused, not fenced: the message is dropped


def test_heartbeat_answers_cancel_and_lost_lease() -> None:
    server = Server(FakeResponse(200, AGENT_JOB),
                    FakeResponse(200, {"lease_owned": True, "cancel_requested": True, "state": "RUNNING",
                                       "lease_expires_at": "2026-01-01T00:02:00.000Z"}),
                    FakeResponse(200, {"lease_owned": False, "cancel_requested": False, "state": "QUEUED"}))
    api = client(server)
    api.claim(JOB_ID, "o", 60, 0)
    job = api.heartbeat(JOB_ID, 1, "o", 60, Progress(fraction=0.5, message="half"))
    assert job.cancel_requested and job.tenant == "acme" and job.lease_expires_at == "2026-01-01T00:02:00.000Z"
    assert server.requests[1]["body"] == {"attempt": 1, "lease_s": 60, "progress": {"fraction": 0.5, "message": "half"}}
    with pytest.raises(StaleAttempt):
        api.heartbeat(JOB_ID, 1, "o", 60)


def test_settles_return_the_job() -> None:
    server = Server(FakeResponse(200, AGENT_JOB), FakeResponse(200, public("SUCCEEDED", result={"ok": 1})),
                    FakeResponse(200, public("QUEUED")), FakeResponse(200, public("CANCELLED")))
    api = client(server)
    api.claim(JOB_ID, "o", 60, 0)
    done = api.complete(JOB_ID, 1, {"ok": 1})
    assert done.state is State.SUCCEEDED and done.result == {"ok": 1} and done.tenant == "acme"
    retry = api.fail(JOB_ID, 1, JobError(type="Boom", message="m", retryable=True, attempt=9))
    assert retry.state is State.QUEUED
    assert server.requests[2]["body"] == {"attempt": 1, "error": {"type": "Boom", "message": "m", "retryable": True}}
    assert api.acknowledge_cancel(JOB_ID, 1).state is State.CANCELLED
    assert server.requests[3]["path"].endswith("/cancelled")


def test_a_result_that_is_not_json_or_too_large_fails_the_job_instead() -> None:
    server = Server(FakeResponse(200, public("FAILED")), FakeResponse(200, public("FAILED")))
    api = client(server)
    api.complete(JOB_ID, 1, {"nan": float("nan")})
    api.complete(JOB_ID, 1, "x" * 300_000)
    assert [r["path"].rsplit("/", 1)[1] for r in server.requests] == ["fail", "fail"]
    assert [r["body"]["error"]["type"] for r in server.requests] == ["ResultNotJSON", "ResultTooLarge"]


def test_a_non_ascii_result_within_its_share_fits_the_apis_body_limit() -> None:
    # Just under the result's share as the record measures it (UTF-8). \u-escaped, 160 KiB of emoji
    # would be ~480 KiB: over the API's body limit, and the job that ran could never be settled
    # (found by the soak's near-limit payloads on the private route).
    result = {"text": "😀🚀 日本語 Ünïcödé" * (RESULT_MAX_BYTES // 40)}
    server = Server(FakeResponse(200, AGENT_JOB), FakeResponse(200, public("SUCCEEDED")))
    api = client(server)
    api.claim(JOB_ID, "o", 60, 0)

    api.complete(JOB_ID, 1, result)

    sent = server.requests[1]
    assert sent["path"].endswith("/complete") and sent["body"]["result"] == result
    assert len(sent["raw"]) <= Settings.model_fields["max_body_bytes"].default
    assert "😀".encode() in sent["raw"]  # UTF-8 on the wire, as JSON allows (RFC 8259 section 8.1)


def test_a_lone_surrogate_in_an_error_message_is_still_sent_escaped() -> None:
    # Not UTF-8 at all: sent \u-escaped, as before, for the API to judge.
    server = Server(FakeResponse(200, public("FAILED")))
    client(server).fail(JOB_ID, 1, JobError(type="Boom", message="bad \ud800 text"))
    assert b"\\ud800" in server.requests[0]["raw"]


def test_unavailable_is_retried_with_jittered_backoff_then_succeeds() -> None:
    sleeps: list[float] = []
    server = Server(FakeResponse(503, {}), ConnectionRefusedError(), TimeoutError("read"),
                    FakeResponse(200, AGENT_JOB))
    job = client(server, sleeps=sleeps, rng=0.5).claim(JOB_ID, "o", 60, 0)
    assert job.attempt == 1
    # full jitter, rng fixed at 0.5: half of 0.5, 1, 2
    assert sleeps == [0.25, 0.5, 1.0]


def test_retry_after_is_honoured_up_to_the_cap() -> None:
    sleeps: list[float] = []
    server = Server(FakeResponse(429, {}, {"Retry-After": "3"}), FakeResponse(429, {}, {"Retry-After": "99"}),
                    FakeResponse(200, AGENT_JOB))
    client(server, sleeps=sleeps, rng=0.0).claim(JOB_ID, "o", 60, 0)
    assert sleeps == [3.0, 8.0]


def test_gives_up_after_max_attempts_as_dependency_unavailable() -> None:
    sleeps: list[float] = []
    server = Server(*[FakeResponse(502, {}) for _ in range(3)])
    with pytest.raises(DependencyUnavailable, match="HTTP 502"):
        client(server, attempts=3, sleeps=sleeps).heartbeat(JOB_ID, 1, "o", 60)
    assert len(server.requests) == 3 and len(sleeps) == 2


def test_a_stale_kept_alive_connection_is_replaced_at_once() -> None:
    server = Server(FakeResponse(200, public("QUEUED")), http.client.RemoteDisconnected("closed"),
                    FakeResponse(200, public("QUEUED")))
    sleeps: list[float] = []
    api = client(server, sleeps=sleeps)
    api.fail(JOB_ID, 1, JobError(type="X", message="m"))
    api.fail(JOB_ID, 1, JobError(type="X", message="m"))  # the pooled connection fails: a new one, no backoff
    assert server.connections == 2 and sleeps == []


def test_connections_are_kept_alive_unless_the_server_closes() -> None:
    server = Server(FakeResponse(200, public("QUEUED")), FakeResponse(200, public("QUEUED"), close=True),
                    FakeResponse(200, public("QUEUED")))
    api = client(server)
    for _ in range(3):
        api.fail(JOB_ID, 1, JobError(type="X", message="m"))
    assert server.connections == 2


def test_probe_accepts_a_404_and_reports_a_refused_credential() -> None:
    client(Server(FakeResponse(404, {"detail": "job not found"}))).probe()
    with pytest.raises(NotAuthorized):
        client(Server(FakeResponse(401, {"detail": "invalid token"}))).probe()
    with pytest.raises(DependencyUnavailable):
        client(Server(ConnectionRefusedError()), attempts=4).probe()


def test_token_file_is_reread_when_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "token"
    path.write_text("first\n")
    token = BearerToken(token_file=path)
    assert token.current() == "first"
    path.write_text("second")
    import os

    os.utime(path, (1, 1))  # a different mtime, whatever the clock's resolution
    assert token.current() == "second"


def test_sigv4_signs_for_execute_api() -> None:
    server = Server(FakeResponse(200, AGENT_JOB))
    auth = SigV4(Credentials("AKIDEXAMPLE", "secret", "session-token"), "eu-west-1")
    client(server, auth=auth).claim(JOB_ID, "o", 60, 0)
    headers = server.requests[0]["headers"]
    assert headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/")
    assert "/eu-west-1/execute-api/aws4_request" in headers["Authorization"]
    assert "SignedHeaders=" in headers["Authorization"] and "host" in headers["Authorization"]
    assert headers["X-Amz-Security-Token"] == "session-token" and headers["X-Amz-Date"]
