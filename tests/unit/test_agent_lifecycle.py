"""The Agent class: lifecycle (run blocks, shutdown only sets flags), free-slot receive sizing,
what each outcome does to the message, draining on shutdown, the message's visibility kept
ahead of the lease. Fakes for SQS and the API; jobs run in-thread (the process executor has its
own tests)."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from typing import Any, Callable, Iterator

import pytest

from jobbridge.errors import DependencyUnavailable, InvalidTransition, StaleAttempt
from jobbridge.models import Job, JobError, Progress, Route, State
from jobbridge.registry import load_registry
from jobbridge.runner import LeaseLost, execute_inline
from jobbridge_agent.agent import Agent, MessageLease
from jobbridge_agent.backoff import Backoff
from jobbridge_agent.config import load_config
from jobbridge_agent.process import AgentShutdown
from timing import wait_for

REGISTRY = load_registry()
ENV = {"JOBBRIDGE_AGENT_QUEUE_URL": "http://127.0.0.1:1/123456789012/jobbridge-private",
       "JOBBRIDGE_AGENT_API_URL": "http://127.0.0.1:2", "JOBBRIDGE_AGENT_TOKEN": "t",
       "JOBBRIDGE_AGENT_LEASE_S": "30", "JOBBRIDGE_AGENT_HEARTBEAT_S": "10", "JOBBRIDGE_AGENT_WAIT_S": "0",
       "JOBBRIDGE_AGENT_GRACE_S": "5", "JOBBRIDGE_AGENT_KILL_GRACE_S": "1", "JOBBRIDGE_AGENT_SETTLE_RETRIES": "0"}



class FakeSqsClient:
    def get_queue_attributes(self, **kw: Any) -> dict[str, Any]:
        return {"Attributes": {"QueueArn": "arn:aws:sqs:us-east-1:123456789012:jobbridge-private"}}


class FakeQueue:
    """The private queue: messages to hand out, and a record of what the agent did to each."""

    def __init__(self) -> None:
        self.pending: deque[dict[str, Any]] = deque()
        self.receives: list[tuple[int, int]] = []  # (MaxNumberOfMessages asked, free slots then)
        self.deleted: list[str] = []
        self.visibility: list[tuple[str, int]] = []
        self.agent: Agent | None = None
        self.hold = threading.Event()  # set: receive blocks (a long poll in flight)
        self.client = FakeSqsClient()
        self.lock = threading.Lock()

    def add(self, job_id: str, attempt: int = 0) -> str:
        receipt = f"rh-{job_id}-{attempt}"
        body = json.dumps({"job_id": job_id, "route": "private", "attempt": attempt})
        self.pending.append({"MessageId": f"m-{job_id}-{attempt}", "ReceiptHandle": receipt, "Body": body})
        return receipt

    def receive(self, max_messages: int, wait_s: int, visibility_s: int | None = None) -> list[dict[str, Any]]:
        assert self.agent is not None
        self.receives.append((max_messages, self.agent.free_slots()))
        while self.hold.is_set():
            time.sleep(0.01)
        with self.lock:
            out = [self.pending.popleft() for _ in range(min(max_messages, len(self.pending)))]
        if not out:
            time.sleep(0.02)
        return out

    def delete(self, receipt: str) -> None:
        self.deleted.append(receipt)

    def change_visibility(self, receipt: str, seconds: int) -> None:
        self.visibility.append((receipt, seconds))


def job(job_id: str, state: State = State.RUNNING, attempt: int = 1, type_: str = "echo", **kw: Any) -> Job:
    return Job(job_id=job_id, tenant="acme", type=type_, params=kw.pop("params", {}), route=Route.PRIVATE, state=state,
               attempt=attempt, created_at="2026-01-01T00:00:00.000Z", **kw)


class FakeApi:
    """The /agent routes in memory. ``refuse``/``down`` make claims fail; ``lost`` heartbeats."""

    def __init__(self) -> None:
        self.refuse: set[str] = set()
        self.down: set[str] = set()
        self.lost: set[str] = set()
        self.types: dict[str, str] = {}
        self.params: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.tokens: list[str | None] = []
        self.lock = threading.Lock()

    def _record(self, action: str, job_id: str, detail: Any = None) -> None:
        with self.lock:
            self.calls.append((action, job_id, detail))

    def actions(self, job_id: str) -> list[str]:
        return [a for a, j, _ in self.calls if j == job_id]

    def probe(self) -> None:
        pass

    def close(self) -> None:
        pass

    def claim(self, job_id: str, owner: str, lease_s: float, expected_attempt: int | None = None,
              claim_token: str | None = None) -> Job:
        self._record("claim", job_id, expected_attempt)
        self.tokens.append(claim_token)
        if job_id in self.down:
            raise DependencyUnavailable("api", "claim: ConnectionRefusedError")
        if job_id in self.refuse:
            raise InvalidTransition(job_id, "claim", "RUNNING")
        return job(job_id, attempt=(expected_attempt or 0) + 1, type_=self.types.get(job_id, "echo"),
                   params=self.params.get(job_id, {"n": 1}))

    def heartbeat(self, job_id: str, attempt: int, owner: str, lease_s: float, progress: Progress | None = None) -> Job:
        self._record("heartbeat", job_id, progress)
        if job_id in self.lost:
            raise StaleAttempt(job_id, "heartbeat", "RUNNING")
        return job(job_id, attempt=attempt)

    def complete(self, job_id: str, attempt: int, result: Any) -> Job:
        self._record("complete", job_id, result)
        if job_id in self.lost:
            raise StaleAttempt(job_id, "complete", "RUNNING")
        return job(job_id, State.SUCCEEDED, attempt, result=result)

    def fail(self, job_id: str, attempt: int, error: JobError, max_attempts: int | None = None,
             job_type: str | None = None) -> Job:
        self._record("fail", job_id, error)
        return job(job_id, State.QUEUED if error.retryable else State.FAILED, attempt, error=error)

    def acknowledge_cancel(self, job_id: str, attempt: int) -> Job:
        self._record("cancelled", job_id)
        return job(job_id, State.CANCELLED, attempt)

    def release(self, job_id: str, attempt: int, reason: str) -> Job:
        self._record("release", job_id, reason)
        return job(job_id, State.QUEUED, attempt, releases=1)


class Gate:
    """Execute hook: jobs whose id is gated wait until opened (or until the agent stops them)."""

    def __init__(self) -> None:
        self.gated: dict[str, threading.Event] = {}
        self.running: set[str] = set()
        self.peak = 0
        self.lock = threading.Lock()

    def factory(self, slot: Any) -> Any:
        def execute(jt: Any, params: Any, ctx: Any) -> Any:
            with self.lock:
                self.running.add(ctx.job_id)
                self.peak = max(self.peak, len(self.running))
            try:
                gate = self.gated.get(ctx.job_id)
                while gate is not None and not gate.is_set():
                    if slot.stop == "force":  # as ProcessExecutor: killed, nothing reported
                        raise LeaseLost(ctx.job_id)
                    if slot.stop:
                        raise AgentShutdown("the agent shut down before the job finished")
                    ctx.raise_if_stopping()
                    time.sleep(0.01)
                return execute_inline(jt, params, ctx)
            finally:
                with self.lock:
                    self.running.discard(ctx.job_id)
        return execute


@pytest.fixture
def parts() -> tuple[FakeQueue, FakeApi, Gate]:
    return FakeQueue(), FakeApi(), Gate()


@pytest.fixture
def make_agent(parts: tuple[FakeQueue, FakeApi, Gate]) -> Iterator[Callable[..., Agent]]:
    queue, api, gate = parts
    threads: list[tuple[Agent, threading.Thread]] = []

    def make(start: bool = True, backoff: Backoff = Backoff(1.0, 30.0), **env: str) -> Agent:
        config = load_config(None, {**ENV, **{f"JOBBRIDGE_AGENT_{k.upper()}": v for k, v in env.items()}})
        agent = Agent(config, api=api, queue=queue, poll_queue=queue, registry=REGISTRY, execute_factory=gate.factory,
                      backoff=backoff)
        queue.agent = agent
        agent.check()
        if start:
            thread = threading.Thread(target=lambda: setattr(agent, "exit_code", agent.run()), daemon=True)
            thread.start()
            threads.append((agent, thread))
        return agent

    yield make
    for agent, thread in threads:
        for event in gate.gated.values():
            event.set()
        agent.shutdown(force=True)
        thread.join(10)


# --- lifecycle ----------------------------------------------------------------------------------


def test_shutdown_is_idempotent_and_only_sets_flags(make_agent: Callable[..., Agent]) -> None:
    agent = make_agent(start=False)
    agent.shutdown()
    first = agent._stop_at
    agent.shutdown()
    assert agent._stop == "shutdown" and agent._stop_at == first
    agent.shutdown(force=True)
    agent.shutdown()
    assert agent._stop == "force" and agent._stop_at == first


def test_run_blocks_until_shutdown_then_returns_0(make_agent: Callable[..., Agent], parts: Any) -> None:
    queue, _, _ = parts
    agent = make_agent()
    wait_for(lambda: queue.receives)
    assert not hasattr(agent, "exit_code")  # still running
    agent.shutdown()
    wait_for(lambda: hasattr(agent, "exit_code"))
    assert agent.exit_code == 0


def test_forced_shutdown_returns_1(make_agent: Callable[..., Agent], parts: Any) -> None:
    queue, _, _ = parts
    agent = make_agent()
    wait_for(lambda: queue.receives)
    agent.shutdown(force=True)
    wait_for(lambda: hasattr(agent, "exit_code"))
    assert agent.exit_code == 1


# --- receiving ----------------------------------------------------------------------------------


def test_never_receives_more_than_its_free_slots(make_agent: Callable[..., Agent], parts: Any) -> None:
    queue, api, gate = parts
    # given three slots and five jobs that block until released
    ids = [f"job-{i}" for i in range(5)]
    for job_id in ids:
        gate.gated[job_id] = threading.Event()
        queue.add(job_id)
    agent = make_agent(concurrency="3")
    wait_for(lambda: len(gate.running) == 3)
    receives_when_full = len(queue.receives)
    time.sleep(0.2)  # a full agent must not poll (nothing to assert about time: only the count)
    assert len(queue.receives) == receives_when_full
    # when one job finishes, then the next receive asks for exactly one message
    gate.gated["job-0"].set()
    wait_for(lambda: len(gate.running) == 3 and "job-3" in gate.running)
    for event in gate.gated.values():
        event.set()
    wait_for(lambda: len(queue.deleted) == 5)
    assert queue.receives[0] == (3, 3)
    assert all(asked == free and asked >= 1 for asked, free in queue.receives)
    assert any(asked == 1 for asked, _ in queue.receives)
    assert gate.peak == 3
    assert agent.running == 0


def test_messages_received_during_shutdown_are_released_unclaimed(make_agent: Callable[..., Agent], parts: Any) -> None:
    queue, api, _ = parts
    # given a long poll in flight
    queue.hold.set()
    agent = make_agent()
    wait_for(lambda: queue.receives)
    receipt = queue.add("job-late")
    # when the agent is told to stop, and then the poll returns a message
    agent.shutdown()
    queue.hold.clear()
    wait_for(lambda: hasattr(agent, "exit_code"))
    # then the message is made visible again at once and never claimed
    assert (receipt, 0) in queue.visibility
    assert api.actions("job-late") == [] and receipt not in queue.deleted
    assert len(queue.receives) == 1


# --- what each outcome does to the message --------------------------------------------------------


def test_settled_job_deletes_its_message(make_agent: Callable[..., Agent], parts: Any) -> None:
    queue, api, _ = parts
    receipt = queue.add("job-ok", attempt=2)
    make_agent()
    wait_for(lambda: receipt in queue.deleted)
    assert api.actions("job-ok") == ["claim", "complete"]
    assert api.calls[0][2] == 2  # claimed with the message's attempt


def test_refused_claim_deletes_the_message(make_agent: Callable[..., Agent], parts: Any) -> None:
    queue, api, _ = parts
    api.refuse.add("job-dup")
    receipt = queue.add("job-dup")
    make_agent()
    wait_for(lambda: receipt in queue.deleted)
    assert api.actions("job-dup") == ["claim"]


def test_lost_lease_abandons_without_reporting_and_leaves_the_message(make_agent: Callable[..., Agent],
                                                                     parts: Any) -> None:
    queue, api, gate = parts
    # given a running job whose heartbeat says another attempt owns it
    api.lost.add("job-lost")
    gate.gated["job-lost"] = threading.Event()
    receipt = queue.add("job-lost")
    agent = make_agent(lease_s="30", heartbeat_s="0.05", visibility_s="30")
    wait_for(lambda: "heartbeat" in api.actions("job-lost"))
    wait_for(lambda: agent.running == 0)
    # then nothing is reported, and the message is neither deleted nor touched
    assert set(api.actions("job-lost")) == {"claim", "heartbeat"}
    assert receipt not in queue.deleted and all(r != receipt for r, _ in queue.visibility)


FAST_BACKOFF = Backoff(0.02, 0.05)


def test_unreachable_api_holds_the_message_and_pauses_receiving(make_agent: Callable[..., Agent],
                                                                parts: Any) -> None:
    queue, api, _ = parts
    api.down.add("job-wait")
    receipt = queue.add("job-wait")
    agent = make_agent()
    wait_for(lambda: any(r == receipt for r, _ in queue.visibility))
    # the message stays hidden (its visibility pushed past the next try), it is not handed back
    assert all(seconds >= agent.config.message_visibility_s for r, seconds in queue.visibility if r == receipt)
    assert receipt not in queue.deleted
    assert agent._api_failures >= 1 and agent._api_retry_at > 0  # receiving pauses for a backoff


def test_a_claim_through_an_api_outage_keeps_its_one_receive_and_runs_when_the_api_is_back(
        make_agent: Callable[..., Agent], parts: Any) -> None:
    queue, api, _ = parts
    # given the API down for several claim tries (each would have been a receive: towards the DLQ)
    api.down.add("job-held")
    receipt = queue.add("job-held")
    make_agent(backoff=FAST_BACKOFF)
    wait_for(lambda: api.actions("job-held").count("claim") >= 4)
    # when it is back
    api.down.discard("job-held")
    wait_for(lambda: receipt in queue.deleted)
    # then the job ran from the one receive: the message was held, never made visible again
    assert api.actions("job-held")[-2:] == ["claim", "complete"]
    assert len(set(api.tokens)) == 1 and api.tokens[0]  # every try the same claim: a lost answer is recognised
    assert sum(1 for asked, _ in queue.receives) >= 1
    held = [seconds for r, seconds in queue.visibility if r == receipt]
    assert held and min(held) >= 30  # the message's visibility (lease_s) at least, every time


def test_a_refused_credential_holds_the_message_until_the_credential_is_renewed(make_agent: Callable[..., Agent],
                                                                              parts: Any) -> None:
    from jobbridge_agent.api import NotAuthorized

    queue, api, _ = parts
    refusing = {"on": True}
    real_claim = api.claim

    def claim(job_id: str, *args: Any, **kw: Any) -> Job:
        if refusing["on"]:
            api._record("claim", job_id)
            raise NotAuthorized("api", "claim: HTTP 401: the token expired")
        return real_claim(job_id, *args, **kw)

    api.claim = claim  # type: ignore[method-assign]
    receipt = queue.add("job-cred")
    make_agent(backoff=FAST_BACKOFF)
    wait_for(lambda: api.actions("job-cred").count("claim") >= 3)
    refusing["on"] = False  # the operator renewed the token file
    wait_for(lambda: receipt in queue.deleted)
    assert api.actions("job-cred")[-1] == "complete"
    assert all(seconds >= 30 for r, seconds in queue.visibility if r == receipt)  # held, never handed back


def test_shutdown_releases_a_held_message_unclaimed(make_agent: Callable[..., Agent], parts: Any) -> None:
    queue, api, _ = parts
    api.down.add("job-held")
    receipt = queue.add("job-held")
    agent = make_agent(backoff=FAST_BACKOFF)
    wait_for(lambda: api.actions("job-held").count("claim") >= 2)
    agent.shutdown()
    wait_for(lambda: hasattr(agent, "exit_code"))
    assert agent.exit_code == 0
    assert queue.visibility[-1] == (receipt, 0) and receipt not in queue.deleted


def test_a_malformed_message_comes_back_after_a_short_backoff_for_the_dead_letter_queue(
        make_agent: Callable[..., Agent], parts: Any) -> None:
    queue, api, _ = parts
    queue.pending.append({"MessageId": "m-bad", "ReceiptHandle": "rh-bad", "Body": "not json",
                          "Attributes": {"ApproximateReceiveCount": "3"}})
    make_agent()
    wait_for(lambda: queue.visibility)
    # its third receive: back after 4-8 s, not after the message's visibility (lease_s, 30 s here)
    ((receipt, seconds),) = queue.visibility
    assert receipt == "rh-bad" and 4 <= seconds <= 8 and not queue.deleted and not api.calls


# --- shutdown drains ------------------------------------------------------------------------------


def test_shutdown_lets_jobs_finish_within_the_grace_period(make_agent: Callable[..., Agent], parts: Any) -> None:
    queue, api, gate = parts
    gate.gated["job-finishing"] = threading.Event()
    receipt = queue.add("job-finishing")
    agent = make_agent(grace_s="30")
    wait_for(lambda: gate.running)
    agent.shutdown()
    threading.Timer(0.3, gate.gated["job-finishing"].set).start()
    wait_for(lambda: hasattr(agent, "exit_code"))
    assert agent.exit_code == 0
    assert api.actions("job-finishing") == ["claim", "complete"] and receipt in queue.deleted


def test_jobs_past_the_grace_period_are_released_without_spending_an_attempt(make_agent: Callable[..., Agent],
                                                                           parts: Any) -> None:
    queue, api, gate = parts
    gate.gated["job-long"] = threading.Event()  # never opened
    receipt = queue.add("job-long")
    agent = make_agent(grace_s="0.2")
    wait_for(lambda: gate.running)
    agent.shutdown()
    wait_for(lambda: hasattr(agent, "exit_code"))
    assert agent.exit_code == 0
    assert api.actions("job-long") == ["claim", "release"]  # not "fail": the shutdown is ours, not the job's
    reason = [d for a, j, d in api.calls if a == "release"][0]
    assert "AgentShutdown" in reason
    assert receipt in queue.deleted  # the job gets a fresh message from the bridge


def test_second_signal_stops_at_once_without_reporting(make_agent: Callable[..., Agent], parts: Any) -> None:
    queue, api, gate = parts
    gate.gated["job-stuck"] = threading.Event()
    queue.add("job-stuck")
    agent = make_agent(grace_s="3600")
    wait_for(lambda: gate.running)
    agent.shutdown()
    agent.shutdown(force=True)
    wait_for(lambda: hasattr(agent, "exit_code"))
    assert agent.exit_code == 1
    assert api.actions("job-stuck") == ["claim"]


# --- the message's visibility follows the lease -------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_message_lease_extends_visibility_on_heartbeats_at_most_every_interval() -> None:
    queue, api, clock = FakeQueue(), FakeApi(), Clock()
    lease = MessageLease(api, queue, "rh-1", visibility_s=60, min_interval_s=7.5, clock=clock)
    for now in (1.0, 5.0, 8.0, 10.0, 16.0):
        clock.now = now
        lease.heartbeat("job-1", 1, "o", 60)
    assert queue.visibility == [("rh-1", 60), ("rh-1", 60)]  # at 8 s and 16 s


def test_message_lease_takes_the_runners_forced_cancel() -> None:
    # the runner's watchdog cancels an ignoring job with forced=True: the agent's lease must take it
    api = FakeApi()
    lease = MessageLease(api, FakeQueue(), "rh-3", visibility_s=60, min_interval_s=1.0, clock=Clock())
    assert lease.acknowledge_cancel("job-3", 1, forced=True).state is State.CANCELLED
    assert api.actions("job-3") == ["cancelled"]


def test_message_lease_extends_through_an_api_outage_but_not_after_a_lost_lease() -> None:
    queue, api, clock = FakeQueue(), FakeApi(), Clock()
    lease = MessageLease(api, queue, "rh-2", visibility_s=60, min_interval_s=1.0, clock=clock)
    api.heartbeat = lambda *a, **k: (_ for _ in ()).throw(DependencyUnavailable("api", "down"))  # type: ignore[method-assign]
    clock.now = 5.0
    with pytest.raises(DependencyUnavailable):
        lease.heartbeat("job-2", 1, "o", 60)
    assert queue.visibility == [("rh-2", 60)]
    api.heartbeat = lambda *a, **k: (_ for _ in ()).throw(StaleAttempt("job-2", "heartbeat", "RUNNING"))  # type: ignore[method-assign]
    clock.now = 10.0
    with pytest.raises(StaleAttempt):
        lease.heartbeat("job-2", 1, "o", 60)
    assert queue.visibility == [("rh-2", 60)]


def test_a_refused_credential_is_logged_as_an_error_and_the_job_runs_on(caplog: pytest.LogCaptureFixture) -> None:
    from jobbridge_agent.api import NotAuthorized

    queue, api, clock = FakeQueue(), FakeApi(), Clock()
    lease = MessageLease(api, queue, "rh-3", visibility_s=60, min_interval_s=1.0, clock=clock)
    api.heartbeat = lambda *a, **k: (_ for _ in ()).throw(NotAuthorized("api", "heartbeat: HTTP 401"))  # type: ignore[method-assign]
    clock.now = 5.0
    with caplog.at_level("ERROR", logger="jobbridge_agent"), pytest.raises(DependencyUnavailable):
        lease.heartbeat("job-3", 1, "o", 60)
    assert [r.message for r in caplog.records if r.levelname == "ERROR"] == ["the API refused the agent's credential"]
    assert queue.visibility == [("rh-3", 60)]  # an outage of sorts: the message stays hidden meanwhile
