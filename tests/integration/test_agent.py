"""The agent in this process against moto server and the API app served by uvicorn in a thread:
the real /agent routes, the real private queue (from template.yaml), job functions in real child
processes."""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import httpx
import pytest
import uvicorn

from jobbridge.dispatch import Dispatch, Dispatcher
from jobbridge.models import Route
from jobbridge.registry import REGISTRY, load_registry
from jobbridge_agent.agent import Agent
from jobbridge_agent.config import ConfigError, load_config
from jobbridge_local import tokens
from jobbridge_local.motoserver import free_port
from timing import wait_for

pytestmark = pytest.mark.integration

JOB_MODULES = "fixtures_jobs.agent_jobs"
AGENT_ID = "it-agent"



@dataclass
class World:
    stack: Any
    api_url: str
    state_dir: Path
    http: httpx.Client
    agents: list[tuple[Agent, threading.Thread]] = field(default_factory=list)
    exit_codes: dict[int, int] = field(default_factory=dict)

    # --- the agent ---------------------------------------------------------------------------

    def config(self, **settings: Any) -> Any:
        values = {
            "queue_url": self.stack.queue_url(Route.PRIVATE), "api_url": self.api_url,
            "token": tokens.issue_agent_token(AGENT_ID, state_dir=self.state_dir), "agent_id": AGENT_ID,
            "concurrency": 2, "lease_s": 10, "heartbeat_s": 1, "wait_s": 1, "grace_s": 30, "kill_grace_s": 1,
            "job_modules": JOB_MODULES, "settle_retries": 3, **settings,
        }
        return load_config(None, {f"JOBBRIDGE_AGENT_{k.upper()}": str(v) for k, v in values.items()})

    def start_agent(self, **settings: Any) -> Agent:
        agent = Agent(self.config(**settings))
        agent.check()
        thread = threading.Thread(target=lambda: self.exit_codes.__setitem__(id(agent), agent.run()), daemon=True)
        thread.start()
        self.agents.append((agent, thread))
        return agent

    def stop_agent(self, agent: Agent, force: bool = False, timeout: float = 60) -> int:
        agent.shutdown(force=force)
        for candidate, thread in self.agents:
            if candidate is agent:
                thread.join(timeout)
                assert not thread.is_alive(), "the agent did not stop"
        return self.exit_codes[id(agent)]

    # --- jobs ----------------------------------------------------------------------------------

    def submit(self, job_type: str, params: dict[str, Any]) -> str:
        response = self.http.post("/jobs", json={"type": job_type, "params": params, "target": "private"})
        assert response.status_code == 202, response.text
        job_id = response.json()["job_id"]
        self.dispatch(job_id)
        return job_id

    def dispatch(self, job_id: str) -> None:
        """What the bridge does for a new job: send its message to the private queue."""
        job = self.stack_store().get(job_id)
        sent, failed = Dispatcher({Route.PRIVATE: self.stack.queue_url(Route.PRIVATE)},
                                  client=self.stack.client("sqs")).send(
            [Dispatch(record_id=job_id, job_id=job_id, route=job.route, attempt=job.attempt,
                      correlation_id=job.correlation_id, timeout_s=job.timeout_s)])
        assert sent and not failed
        self.stack_store().mark_dispatched(job_id, job.attempt)

    def stack_store(self) -> Any:
        from jobbridge.store import JobStore

        return JobStore(self.stack.table_name, client=self.stack.client("dynamodb"))

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.http.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def wait_state(self, job_id: str, *states: str, timeout: float = 60) -> dict[str, Any]:
        return wait_for(lambda: (j := self.job(job_id))["state"] in states and j, timeout, what=f"{job_id} in {states}")

    def messages(self) -> int:
        attrs = self.stack.client("sqs").get_queue_attributes(
            QueueUrl=self.stack.queue_url(Route.PRIVATE),
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


@pytest.fixture
def world(fresh_stack: Any, function_env: Callable[..., Any], tmp_path: Path) -> Iterator[World]:
    # the API exactly as the local stack runs it: ApiFunction's environment, verifying tokens itself
    keys = tokens.ensure_keypair(tmp_path)
    function_env("api", fresh_stack, JOBBRIDGE_AUTH_MODE="verify", JOBBRIDGE_JWT_PUBLIC_KEY_FILE=str(keys.public_key_file),
                 JOBBRIDGE_JWT_ISSUER=tokens.ISSUER, JOBBRIDGE_JWT_AUDIENCE=tokens.AUDIENCE,
                 JOBBRIDGE_JOB_MODULES=JOB_MODULES)
    load_registry()
    types_before = set(REGISTRY.names())
    from jobbridge_api.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    serving = threading.Thread(target=server.run, daemon=True)
    serving.start()
    wait_for(lambda: server.started, 20, what="uvicorn")
    api_url = f"http://127.0.0.1:{port}"
    token = tokens.issue_token("acme", state_dir=tmp_path)
    http = httpx.Client(base_url=api_url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    world = World(fresh_stack, api_url, tmp_path, http)
    yield world
    for agent, thread in world.agents:
        agent.shutdown(force=True)
        thread.join(30)
    http.close()
    server.should_exit = True
    serving.join(20)
    for name in set(REGISTRY.names()) - types_before:
        REGISTRY._types.pop(name)  # the test job types: other tests count the registry's types
    sys.modules.pop(JOB_MODULES, None)


def events(job: dict[str, Any]) -> list[tuple[str, str | None]]:
    return [(h["event"], h.get("detail")) for h in job["history"]]


# --- jobs run to their end --------------------------------------------------------------------------


def test_private_jobs_finish_with_their_progress(world: World) -> None:
    world.start_agent()
    transcode = world.submit("transcode", {"video_id": "v-4k", "resolution": "4K", "duration_s": 1})
    genome = world.submit("genome_align", {"sample_id": "s1", "duration_s": 0.5})
    for job_id, last_step in ((transcode, "package"), (genome, "call variants")):
        job = world.wait_state(job_id, "SUCCEEDED", "FAILED")
        assert job["state"] == "SUCCEEDED", job
        assert job["progress"] == {"fraction": 1.0, "message": last_step}
        assert job["attempt"] == 1
        assert ("claimed", "agent") in events(job)  # the tenant's view: the kind of worker only
        claims = [e for e in world.stack_store().get(job_id).history if e.event == "claimed"]
        assert [e.detail for e in claims] == [f"agent:{AGENT_ID}"]  # the record: the agent the credential names
    assert world.job(transcode)["result"]["output"] == "renditions/v-4k/4K.mp4"
    wait_for(lambda: world.messages() == 0, 10, what="the messages to be deleted")


def test_cancelling_a_running_job_stops_it(world: World) -> None:
    world.start_agent()
    job_id = world.submit("sleep", {"seconds": 120, "steps": 120})
    world.wait_state(job_id, "RUNNING")
    assert world.http.post(f"/jobs/{job_id}/cancel").status_code == 200
    job = world.wait_state(job_id, "CANCELLED", "SUCCEEDED", "FAILED")
    assert job["state"] == "CANCELLED"
    assert events(job)[-1] == ("cancelled", "stopped after cancel request")
    wait_for(lambda: world.messages() == 0, 10, what="the message to be deleted")


def test_a_job_that_ignores_cancel_is_killed_after_the_grace_and_cancelled(world: World) -> None:
    world.start_agent(kill_grace_s=1)
    job_id = world.submit("stubborn", {"seconds": 600})
    world.wait_state(job_id, "RUNNING")
    world.http.post(f"/jobs/{job_id}/cancel")
    job = world.wait_state(job_id, "CANCELLED", "SUCCEEDED", "FAILED", timeout=30)
    assert job["state"] == "CANCELLED"


def test_a_job_past_its_timeout_is_stopped_and_failed_as_a_timeout(world: World) -> None:
    world.start_agent()
    job_id = world.submit("stubborn_short", {"seconds": 600})  # timeout 2 s, ignored by the function
    job = world.wait_state(job_id, "FAILED", "SUCCEEDED", timeout=30)
    assert job["state"] == "FAILED"
    assert job["error"]["type"] == "Timeout" and job["error"]["retryable"]


def test_a_dead_job_process_fails_the_attempt(world: World) -> None:
    world.start_agent()
    job_id = world.submit("crash", {"code": 9})
    job = world.wait_state(job_id, "FAILED", "SUCCEEDED")
    assert job["error"]["type"] == "JobProcessDied" and "code 9" in job["error"]["message"]


def test_a_job_taken_over_is_abandoned_without_a_report(world: World) -> None:
    from jobbridge.models import JobError

    world.start_agent()
    job_id = world.submit("sleep", {"seconds": 120, "steps": 120})
    running = world.wait_state(job_id, "RUNNING")
    # when another worker's write moves the job on (as the sweeper does when a lease lapses)
    world.stack_store().fail(job_id, running["attempt"], JobError(type="LeaseExpired", message="taken over",
                                                                   retryable=True), retry_delay_s=300)
    # then the agent's next heartbeat is refused, the run stops, and nothing is reported
    wait_for(lambda: world.agents[0][0].running == 0, 20, what="the run to stop")
    job = world.job(job_id)
    assert job["state"] == "QUEUED" and job["error"]["type"] == "LeaseExpired"
    assert events(job) == [("submitted", "private"), ("claimed", "agent"), ("retry_scheduled", "taken over")]
    assert world.messages() == 1  # the message is left alone (it lapses; its claim will be refused)


# --- shutdown -----------------------------------------------------------------------------------------


def test_shutdown_releases_unfinished_jobs_without_spending_an_attempt_and_finishes_the_rest(world: World) -> None:
    agent = world.start_agent(grace_s=10, kill_grace_s=1)  # ample for the 1 s job, even on a loaded machine
    short = world.submit("sleep", {"seconds": 1, "steps": 2})
    long = world.submit("stubborn", {"seconds": 600})
    world.wait_state(short, "RUNNING", "SUCCEEDED")
    world.wait_state(long, "RUNNING")
    assert world.stop_agent(agent) == 0
    assert world.job(short)["state"] == "SUCCEEDED"
    job = world.job(long)
    # released: QUEUED again at its attempt (the fence), the run not counted, no error recorded
    assert job["state"] == "QUEUED" and job["attempt"] == 1 and job["error"] is None
    assert job["history"][-1]["event"] == "released" and "shut down" in job["history"][-1]["detail"]
    assert world.stack_store().get(long).attempt_budget == job["max_attempts"] + 1
    assert world.messages() == 0  # the job gets its own fresh message from the bridge


# --- start-up checks ----------------------------------------------------------------------------------


def test_check_refuses_a_queue_that_does_not_exist(world: World) -> None:
    url = world.stack.queue_url(Route.PRIVATE).rsplit("/", 1)[0] + "/no-such-queue"
    with pytest.raises(ConfigError, match="no such queue"):
        Agent(world.config(queue_url=url)).check()


def test_check_refuses_a_token_the_api_does_not_accept(world: World, tmp_path: Path) -> None:
    foreign = tokens.issue_agent_token(AGENT_ID, state_dir=tmp_path / "other-keys")
    with pytest.raises(ConfigError, match="refused the agent's credential"):
        Agent(world.config(token=foreign)).check()
    tenant = tokens.issue_token("acme", state_dir=world.state_dir)  # a tenant's token is not an agent's
    with pytest.raises(ConfigError, match="refused the agent's credential"):
        Agent(world.config(token=tenant)).check()


def test_an_unreachable_api_is_not_fatal(world: World) -> None:
    Agent(world.config(api_url=f"http://127.0.0.1:{free_port()}", api_max_attempts=1)).check()


# --- the /agent routes: one agent cannot act on another's lease ------------------------------------------


def test_another_agent_cannot_extend_settle_or_cancel_a_claimed_job(world: World) -> None:
    from jobbridge.errors import StaleAttempt
    from jobbridge.models import JobError
    from jobbridge_agent.api import AgentApi, BearerToken

    def api(agent_id: str) -> AgentApi:
        return AgentApi(world.api_url, BearerToken(token=tokens.issue_agent_token(agent_id, state_dir=world.state_dir)),
                        max_attempts=1)

    owner, intruder = api("owner-agent"), api("intruder-agent")
    job_id = world.submit("sleep", {"seconds": 60})
    job = owner.claim(job_id, "ignored", 30, expected_attempt=0)
    # when another agent, knowing the job and its attempt, calls every route
    for call in (lambda: intruder.heartbeat(job_id, job.attempt, "x", 30),
                 lambda: intruder.complete(job_id, job.attempt, {"forged": True}),
                 lambda: intruder.fail(job_id, job.attempt, JobError(type="Forged", message="x")),
                 lambda: intruder.acknowledge_cancel(job_id, job.attempt)):
        with pytest.raises(StaleAttempt):
            call()
    # then the job is untouched, and its owner still holds it
    current = world.job(job_id)
    assert current["state"] == "RUNNING" and current["result"] is None and current["error"] is None
    assert owner.heartbeat(job_id, job.attempt, "ignored", 30).state.value == "RUNNING"
    assert owner.complete(job_id, job.attempt, {"ok": True}).state.value == "SUCCEEDED"


def test_an_agent_trying_a_claim_again_gets_the_job_its_lost_answer_claimed(world: World) -> None:
    from jobbridge.errors import InvalidTransition
    from jobbridge_agent.api import AgentApi, BearerToken

    def api(agent_id: str) -> AgentApi:
        return AgentApi(world.api_url, BearerToken(token=tokens.issue_agent_token(agent_id, state_dir=world.state_dir)),
                        max_attempts=1)

    agent, other = api("claiming-agent"), api("other-agent")
    job_id = world.submit("sleep", {"seconds": 60})
    first = agent.claim(job_id, "ignored", 30, expected_attempt=0, claim_token="a" * 32)
    # when the first answer was lost and the agent tries the same claim again
    again = agent.claim(job_id, "ignored", 30, expected_attempt=0, claim_token="a" * 32)
    # then it is answered as made: the same attempt, one claim in the history
    assert (again.attempt, again.lease_owner) == (first.attempt, first.lease_owner) == (1, "agent:claiming-agent")
    assert [h["event"] for h in world.job(job_id)["history"]] == ["submitted", "claimed"]
    # and a copy of the message claimed by anyone else, or by the same agent's other run, is refused
    for claimant, token in ((agent, "b" * 32), (other, "a" * 32)):
        with pytest.raises(InvalidTransition):
            claimant.claim(job_id, "ignored", 30, expected_attempt=0, claim_token=token)
    world.http.post(f"/jobs/{job_id}/cancel")
