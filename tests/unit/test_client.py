"""The Python client (clients/python/jobbridge_client) against the FastAPI app in process.

The app is test_api's (verify mode, moto in process); requests reach it through an httpx transport,
and faults (a 503, a lost answer, a reset connection) are injected in that transport. The client's
``sleep`` is the test's hook: no test sleeps, and a job moves on (claimed, progress, finished) while
the client waits between polls, as a worker would move it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from jobbridge.models import JobError as StoredJobError
from jobbridge.models import Progress as StoredProgress
from jobbridge_client import (AsyncClient, AuthError, Client, Conflict, ConnectionFailed, InvalidRequest, JobCancelled,
                              JobFailed, NotFound, RetryPolicy, ServerError, State, WaitTimeout)
from jobbridge_client._core import LONG_POLL_HEADER, retry_after
# The app and its fixtures (keys, tokens, settings, the side store) are test_api's.
from test_api import app, make_token, public_key_file, settings, signing_key, store  # noqa: F401 (fixtures)

Fault = Callable[[httpx.Request, Callable[[], httpx.Response]], httpx.Response]


class AppTransport(httpx.BaseTransport):
    """Forwards each request to the app (through a TestClient), after the queued faults have had
    their turn: a fault gets the request and a ``forward`` callable, and answers or raises."""

    def __init__(self, asgi_app: Any) -> None:
        self.app_client = TestClient(asgi_app, raise_server_exceptions=False)
        self.faults: deque[Fault] = deque()
        self.requests: list[httpx.Request] = []
        self.extra_headers: dict[str, str] = {}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)

        def forward() -> httpx.Response:
            answer = self.app_client.request(request.method, str(request.url), headers=dict(request.headers),
                                             content=request.read())
            return httpx.Response(answer.status_code, headers={**answer.headers, **self.extra_headers},
                                  content=answer.content)

        if self.faults:
            return self.faults.popleft()(request, forward)
        return forward()


def answer(status: int, headers: dict[str, str] | None = None) -> Fault:
    body = {"type": "https://jobbridge.dev/problems/unavailable", "title": "Service unavailable", "status": status,
            "detail": "try again", "errors": []}
    return lambda request, forward: httpx.Response(status, headers=headers, json=body)


def reset_before_sending(request: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


def lost_answer(request: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
    forward()  # the server did the work; its answer never reached the client
    raise httpx.ReadError("connection reset by peer", request=request)


class Sleeps:
    """The client's sleep: records each pause, advances a fake clock, and runs the next step."""

    def __init__(self) -> None:
        self.pauses: list[float] = []
        self.now = 0.0
        self.steps: deque[Callable[[], Any]] = deque()

    def __call__(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        if self.steps:
            self.steps.popleft()()

    def clock(self) -> float:
        return self.now


@pytest.fixture
def transport(app) -> AppTransport:  # noqa: F811 (the fixture imported above)
    return AppTransport(app)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def client(transport: AppTransport, make_token, sleeps: Sleeps) -> Iterator[Client]:  # noqa: F811
    with Client("http://testserver", token=make_token("acme"), transport=transport, sleep=sleeps,
                clock=sleeps.clock) as made:
        yield made


def run_job(store, job_id: str, *, progress: tuple[float, ...] = (), result: Any = None,  # noqa: F811
            error: StoredJobError | None = None) -> list[Callable[[], Any]]:
    """A worker's steps for ``job_id``: claim, report each progress, then complete or fail."""
    steps: list[Callable[[], Any]] = [lambda: store.claim(job_id, "worker:test", 60, expected_attempt=0)]
    for fraction in progress:
        steps.append(lambda f=fraction: store.set_progress(job_id, 1, StoredProgress(fraction=f, message=f"at {f}")))
    if error is not None:
        steps.append(lambda: store.fail(job_id, 1, error, retry_delay_s=None))
    else:
        steps.append(lambda: store.complete(job_id, 1, result))
    return steps


# --- submit, get, list, cancel -------------------------------------------------------------------


def test_submit_then_get_shows_the_job_typed(client: Client) -> None:
    accepted = client.submit("echo", {"hello": "world"})

    assert accepted.state is State.QUEUED and accepted.route == "lambda" and not accepted.replayed
    assert accepted.location == f"/jobs/{accepted.job_id}"
    job = client.get(accepted.job_id)
    assert job.job_id == accepted.job_id and job.state is State.QUEUED
    assert job.params == {"hello": "world"} and job.idempotency_key == accepted.idempotency_key
    assert job.progress is None and job.error is None


def test_every_submit_carries_an_idempotency_key_of_its_own(client: Client, transport: AppTransport) -> None:
    first, second = client.submit("echo", {"n": 1}), client.submit("echo", {"n": 1})

    keys = [r.headers["Idempotency-Key"] for r in transport.requests]
    assert len(set(keys)) == 2 and first.job_id != second.job_id


def test_a_submit_whose_answer_was_lost_is_retried_and_makes_one_job(client: Client, transport: AppTransport,
                                                                    sleeps: Sleeps) -> None:
    transport.faults.append(lost_answer)

    accepted = client.submit("echo", {"once": True})

    assert accepted.replayed  # the retry found the job its first try had made
    posts = [r for r in transport.requests if r.method == "POST"]
    assert len(posts) == 2 and posts[0].headers["Idempotency-Key"] == posts[1].headers["Idempotency-Key"]
    assert [j.job_id for j in client.list()] == [accepted.job_id]
    assert len(sleeps.pauses) == 1


def test_a_503_is_retried_no_sooner_than_its_retry_after(client: Client, transport: AppTransport,
                                                         sleeps: Sleeps) -> None:
    transport.faults.extend([answer(503, {"Retry-After": "2"}), answer(429, {"Retry-After": "1"})])

    accepted = client.submit("echo")

    assert client.get(accepted.job_id).state is State.QUEUED
    assert sleeps.pauses[0] >= 2 and sleeps.pauses[1] >= 1


def test_retries_spent_raise_the_last_problem(client: Client, transport: AppTransport, sleeps: Sleeps) -> None:
    transport.faults.extend([answer(503)] * client.retry.attempts)

    with pytest.raises(ServerError) as raised:
        client.submit("echo")

    assert raised.value.status == 503 and raised.value.slug == "unavailable" and raised.value.detail == "try again"
    assert len(sleeps.pauses) == client.retry.attempts - 1
    assert not list(client.list())


def test_connection_errors_are_retried_then_raised(client: Client, transport: AppTransport) -> None:
    transport.faults.extend([reset_before_sending, reset_before_sending])
    assert client.submit("echo").state is State.QUEUED

    transport.faults.extend([reset_before_sending] * client.retry.attempts)
    with pytest.raises(ConnectionFailed):
        client.get("job_anything")


def test_a_refused_submit_raises_the_problem_naming_the_field(client: Client, transport: AppTransport) -> None:
    with pytest.raises(InvalidRequest) as raised:
        client.submit("no_such_type")

    problem = raised.value
    assert problem.status == 422 and problem.slug == "unknown-job-type"
    assert problem.errors[0]["loc"] == ["body", "type"] and problem.correlation_id
    assert len(transport.requests) == 1  # a 4xx is not retried


def test_an_unknown_job_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound) as raised:
        client.get("job_01jzzzzzzzzzzzzzzzzzzzzzzz")
    assert raised.value.status == 404


def test_list_iterates_every_page_newest_first(client: Client, transport: AppTransport) -> None:
    submitted = [client.submit("echo", {"n": n}).job_id for n in range(5)]
    transport.requests.clear()

    listed = [job.job_id for job in client.list(page_size=2)]

    assert listed == list(reversed(submitted))
    assert len(transport.requests) == 3  # pages of 2, 2 and 1
    assert [j.job_id for j in client.list(state="CANCELLED")] == []


def test_cancel_a_queued_job_and_again(client: Client, store) -> None:  # noqa: F811
    job_id = client.submit("echo").job_id

    assert client.cancel(job_id).state is State.CANCELLED
    assert client.cancel(job_id).state is State.CANCELLED  # a repeated (or retried) cancel is not an error

    done = client.submit("echo").job_id
    for step in run_job(store, done, result={"ok": True}):
        step()
    with pytest.raises(Conflict) as raised:
        client.cancel(done)
    assert raised.value.slug == "job-final"


# --- auth -----------------------------------------------------------------------------------------


def test_a_token_provider_is_asked_again_once_after_a_401(transport: AppTransport, make_token) -> None:  # noqa: F811
    tokens = iter([make_token("acme", exp=1), make_token("acme")])  # the first one expired long ago
    calls: list[int] = []

    def provider() -> str:
        calls.append(1)
        return next(tokens)

    with Client("http://testserver", token=provider, transport=transport) as client:
        assert client.submit("echo").state is State.QUEUED
        client.list_page()
    assert len(calls) == 2  # once, then once more after the 401; the fresh token then kept


def test_a_refused_token_is_an_auth_error(transport: AppTransport, make_token) -> None:  # noqa: F811
    with Client("http://testserver", token=make_token("acme", exp=1), transport=transport) as client:
        with pytest.raises(AuthError) as raised:
            client.submit("echo")
    assert raised.value.status == 401 and len(transport.requests) == 1

    with Client("http://testserver", token=lambda: make_token("acme", exp=1), transport=transport) as client:
        with pytest.raises(AuthError):
            client.get("job_01jzzzzzzzzzzzzzzzzzzzzzzz")


# --- wait and watch --------------------------------------------------------------------------------


def test_wait_returns_the_succeeded_job_with_its_result(client: Client, store, sleeps: Sleeps) -> None:  # noqa: F811
    job_id = client.submit("echo", {"x": 1}).job_id
    sleeps.steps.extend(run_job(store, job_id, result={"x": 1}))

    job = client.wait(job_id, timeout=60)

    assert job.state is State.SUCCEEDED and job.result == {"x": 1}


def test_wait_raises_job_failed_carrying_the_jobs_error(client: Client, store, sleeps: Sleeps) -> None:  # noqa: F811
    job_id = client.submit("echo").job_id
    sleeps.steps.extend(run_job(store, job_id, error=StoredJobError(type="Boom", message="it broke")))

    with pytest.raises(JobFailed) as raised:
        client.wait(job_id)

    assert raised.value.error.type == "Boom" and raised.value.error.message == "it broke"
    assert raised.value.job.state is State.FAILED


def test_wait_raises_job_cancelled(client: Client, sleeps: Sleeps) -> None:
    job_id = client.submit("echo").job_id
    sleeps.steps.append(lambda: client.cancel(job_id))

    with pytest.raises(JobCancelled):
        client.wait(job_id)


def test_wait_gives_up_after_its_timeout_with_the_job_as_last_seen(client: Client, sleeps: Sleeps) -> None:
    job_id = client.submit("echo").job_id

    with pytest.raises(WaitTimeout) as raised:
        client.wait(job_id, timeout=10)

    assert raised.value.job.state is State.QUEUED
    assert sum(sleeps.pauses) <= 10 and max(sleeps.pauses) <= 3  # polls back off, up to the poll maximum


def test_watch_yields_each_change_once_and_ends_final(client: Client, store, sleeps: Sleeps) -> None:  # noqa: F811
    job_id = client.submit("sleep", {"seconds": 1, "steps": 2}).job_id
    steps = run_job(store, job_id, progress=(0.5, 1.0), result={"slept_s": 1})
    for step in steps:  # a quiet poll between each change: it yields nothing
        sleeps.steps.extend([step, lambda: None])

    seen = [(job.state.value, job.progress.fraction if job.progress else None) for job in client.watch(job_id)]

    assert seen == [("QUEUED", None), ("RUNNING", None), ("RUNNING", 0.5), ("RUNNING", 1.0), ("SUCCEEDED", 1.0)]


def test_wait_uses_the_servers_long_poll_when_it_has_one(client: Client, transport: AppTransport, store,  # noqa: F811
                                                         sleeps: Sleeps) -> None:
    job_id = client.submit("echo").job_id
    transport.extra_headers[LONG_POLL_HEADER] = "3"
    holds = run_job(store, job_id, result=None)

    def held(request: httpx.Request, forward: Callable[[], httpx.Response]) -> httpx.Response:
        holds.pop(0)()  # the server held the request until the job changed
        return forward()

    transport.faults.extend([lambda request, forward: forward(), held, held])
    assert client.wait(job_id).state is State.SUCCEEDED

    polls = [r for r in transport.requests if r.method == "GET"]
    assert all("wait" in r.url.params for r in polls[1:]) and sleeps.pauses == []


def test_without_a_long_poll_the_client_stops_asking_for_one(client: Client, transport: AppTransport, store,  # noqa: F811
                                                             sleeps: Sleeps) -> None:
    job_id = client.submit("echo").job_id
    sleeps.steps.extend(run_job(store, job_id, result=None))

    client.wait(job_id)

    polls = [r for r in transport.requests if r.method == "GET"]
    assert "wait" in polls[1].url.params  # asked once, learnt the server answers at once
    assert all("wait" not in r.url.params for r in polls[2:]) and len(sleeps.pauses) == 2


# --- the async face --------------------------------------------------------------------------------


def test_the_async_client_submits_lists_watches_and_cancels(app, make_token, store) -> None:  # noqa: F811
    pauses: list[float] = []

    async def scenario() -> None:
        steps = deque()

        async def sleep(seconds: float) -> None:
            pauses.append(seconds)
            if steps:
                steps.popleft()()

        async def token() -> str:
            return make_token("acme")

        transport = httpx.ASGITransport(app=app)
        async with AsyncClient("http://testserver", token=token, transport=transport, sleep=sleep) as client:
            accepted = await client.submit("echo", {"a": 1})
            other = await client.submit("echo", {"a": 2})
            assert [j.job_id async for j in client.list(page_size=1)] == [other.job_id, accepted.job_id]  # two pages

            steps.extend(run_job(store, accepted.job_id, progress=(0.5,), result={"a": 1}))
            states = [job.state async for job in client.watch(accepted.job_id)]
            assert states[0] is State.QUEUED and states[-1] is State.SUCCEEDED
            assert (await client.wait(accepted.job_id)).result == {"a": 1}

            many = await client.submit_many([{"type": "echo", "params": {"b": n}} for n in range(2)] + [{"type": "x!"}])
            assert [type(r).__name__ for r in many] == ["Accepted", "Accepted", "InvalidRequest"]

            assert (await client.cancel(other.job_id)).state is State.CANCELLED
            with pytest.raises(JobCancelled):
                await client.wait(other.job_id)
            with pytest.raises(NotFound):
                await client.get("job_01jzzzzzzzzzzzzzzzzzzzzzzz")

    asyncio.run(scenario())
    assert pauses


# --- the retry policy -------------------------------------------------------------------------------


def test_backoff_grows_is_jittered_capped_and_ends() -> None:
    policy = RetryPolicy(attempts=6, base=0.5, cap=4.0)

    for retry, ceiling in enumerate([0.5, 1.0, 2.0, 4.0, 4.0]):
        delays = {policy.delay(retry) for _ in range(50)}
        assert all(0 <= d <= ceiling for d in delays) and len(delays) > 1
    assert policy.delay(5) is None
    assert policy.delay(0, retry_after=120) == policy.max_retry_after  # a Retry-After is honoured, up to a bound


def test_retry_after_reads_seconds_and_http_dates() -> None:
    from datetime import datetime, timezone

    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after(httpx.Response(503, headers={"Retry-After": "7"})) == 7
    assert retry_after(httpx.Response(503, headers={"Retry-After": "Thu, 01 Jan 2026 12:00:30 GMT"}), now) == 30
    assert retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None
    assert retry_after(httpx.Response(503)) is None


# --- bulk submit ------------------------------------------------------------------------------------


def test_submit_many_sends_25_a_request_with_one_result_per_job(client: Client, transport: AppTransport) -> None:
    jobs = [{"type": "echo", "params": {"n": n}} for n in range(30)]
    jobs[7] = {"type": "echo", "priority": 500}

    results = client.submit_many(jobs)

    assert len(transport.requests) == 2  # 25 + 5
    assert isinstance(results[7], InvalidRequest) and results[7].errors[0]["loc"] == ["body", "priority"]
    accepted = [r for i, r in enumerate(results) if i != 7]
    assert all(r.state is State.QUEUED for r in accepted)
    assert len({r.job_id for r in accepted}) == 29 and len(list(client.list(page_size=100))) == 29


def test_submit_many_whose_answer_was_lost_makes_each_job_once(client: Client, transport: AppTransport) -> None:
    transport.faults.append(lost_answer)

    results = client.submit_many([{"type": "echo", "params": {"n": n}} for n in range(3)])

    assert all(r.replayed for r in results)  # the retry found the jobs its first try had made
    assert len(list(client.list())) == 3


def test_submit_many_retries_the_items_that_met_an_outage(client: Client, transport: AppTransport, sleeps: Sleeps,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from jobbridge.errors import DependencyUnavailable
    from jobbridge.store import JobStore

    real_create, calls = JobStore.create, []

    def create_failing_second(self: JobStore, job: Any) -> Any:
        calls.append(job.idempotency_key)
        if len(calls) == 2:
            raise DependencyUnavailable("dynamodb", "throttled")
        return real_create(self, job)

    monkeypatch.setattr(JobStore, "create", create_failing_second)
    results = client.submit_many([{"type": "echo", "params": {"n": n}} for n in range(3)])

    assert [r.state for r in results] == [State.QUEUED] * 3 and not any(r.replayed for r in results)
    assert calls[3] == calls[1] and len(calls) == 4  # only the failed item went again, with its key
    assert len(transport.requests) == 2 and len(sleeps.pauses) == 1


def test_a_hot_submit_comes_back_final_with_its_result(client: Client) -> None:
    accepted = client.submit("checksum", {"text": "hello"})

    assert accepted.state is State.SUCCEEDED and accepted.job is not None
    assert accepted.job.result["hexdigest"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert client.wait(accepted.job_id).result == accepted.job.result
