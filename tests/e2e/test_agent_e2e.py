"""The on-prem agent end to end, with real processes: the `make run` stack in a subprocess, and
agents started as an operator starts them (`jobbridge agent run --config FILE`), killed, frozen
and signalled by the tests.

The local stack's own agent runs private jobs to their end. For the fault tests the stack runs
without agents (JOBBRIDGE_LOCAL_AGENTS=0) and the tests start their own. A job whose agent died
is retried through the sweeper (its lease lapses, the sweeper puts it back to QUEUED, the bridge
sends a fresh message): here a thread plays the sweeper's schedule every second, so the test
does not wait for the stack's timer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from e2e_stack import RunningStack, start_stack, wait_for
from jobbridge.dispatch import Dispatcher
from jobbridge.lifecycle import JobLifecycle
from jobbridge.models import Route
from jobbridge.registry import load_registry
from jobbridge.store import JobStore
from jobbridge.sweeper import Sweeper
from jobbridge_local.agents import prepare_agent

pytestmark = pytest.mark.e2e

# Short leases so that a dead agent's job comes back within seconds.
FAST = {"lease_s": 10, "heartbeat_s": 1, "visibility_s": 10, "wait_s": 2, "grace_s": 30, "kill_grace_s": 2,
        "request_timeout_s": 3}


class AgentProcess:
    """``jobbridge agent run --config FILE`` in its own session (signals reach only it)."""

    def __init__(self, stack: RunningStack, index: int, **settings: Any) -> None:
        local = prepare_agent(index, state_dir=stack.state_dir, queue_url=stack.queue_url("PrivateQueue"),
                              api_url=stack.api_url, endpoint_url=stack.endpoint_url, region="us-east-1",
                              concurrency=int(settings.pop("concurrency", 2)))
        self.agent_id = local.agent_id
        self.owner = f"agent:{local.agent_id}"
        env = {**local.env, **{f"JOBBRIDGE_AGENT_{k.upper()}": str(v) for k, v in {**FAST, **settings}.items()}}
        self.log_file = stack.state_dir / f"{local.agent_id}.e2e.log"
        self._log = self.log_file.open("w")
        self.process = subprocess.Popen(local.argv, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        wait_for(lambda: self.logged("agent started") or self.process.poll() is not None, 60, interval=0.2, what="the agent to start")
        assert self.process.poll() is None, self.log_file.read_text()

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_file.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def logged(self, message: str, **fields: Any) -> bool:
        return any(l.get("message") == message and all(l.get(k) == v for k, v in fields.items()) for l in self.lines())

    def signal(self, sig: int, group: bool = False) -> None:
        if group:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.process.wait(timeout)

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._log.close()


class SweeperThread:
    """The sweeper's schedule, every second (see the module docstring)."""

    def __init__(self, stack: RunningStack) -> None:
        store = JobStore(stack.info["table"], client=stack.aws("dynamodb"))
        queues = {Route.PRIVATE: stack.queue_url("PrivateQueue")}
        self.sweeper = Sweeper(JobLifecycle(store, load_registry()), Dispatcher(queues, client=stack.aws("sqs")))
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.sweeper.sweep()

    def close(self) -> None:
        self._stop.set()
        self.thread.join(10)


@pytest.fixture(scope="module")
def bare_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    """The API, the bridge and the dead-letter function (a dead-lettered job is FAILED, as deployed),
    no agent of its own."""
    stack = start_stack(tmp_path_factory.mktemp("agent-stack"), functions="ApiFunction,BridgeFunction,DeadLetterFunction",
                        extra_env={"JOBBRIDGE_LOCAL_AGENTS": "0"})
    yield stack
    stack.stop()


@pytest.fixture
def agents(bare_stack: RunningStack) -> Iterator[Any]:
    started: list[AgentProcess] = []
    counter = iter(range(100, 10_000))

    def start(**settings: Any) -> AgentProcess:
        agent = AgentProcess(bare_stack, next(counter) + 10 * len(started), **settings)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.close()


@pytest.fixture
def sweeper(bare_stack: RunningStack) -> Iterator[SweeperThread]:
    thread = SweeperThread(bare_stack)
    yield thread
    thread.close()


def submit(stack: RunningStack, job_type: str, params: dict[str, Any]) -> str:
    with stack.client("acme") as api:
        response = api.post("/jobs", json={"type": job_type, "params": params, "target": "private"})
    assert response.status_code == 202, response.text
    return response.json()["job_id"]


def get(stack: RunningStack, job_id: str) -> dict[str, Any]:
    with stack.client("acme") as api:
        return api.get(f"/jobs/{job_id}").json()


def wait_state(stack: RunningStack, job_id: str, *states: str, timeout: float = 90) -> dict[str, Any]:
    return wait_for(lambda: (job := get(stack, job_id))["state"] in states and job, timeout, interval=0.3, what=f"{job_id} in {states}")


def events(job: dict[str, Any], name: str) -> list[str | None]:
    return [h.get("detail") for h in job["history"] if h["event"] == name]


def claimed_by(stack: RunningStack, job_id: str) -> list[str | None]:
    """Which agents claimed the job, from its record: tenants see only "agent" (JobPublic)."""
    record = JobStore(stack.info["table"], client=stack.aws("dynamodb")).get(job_id)
    return [entry.detail for entry in record.history if entry.event == "claimed"]


# --- the stack's own agent -----------------------------------------------------------------------------


def test_the_stacks_agent_runs_private_jobs_to_the_end_with_progress(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, functions="ApiFunction,BridgeFunction",
                        extra_env={"JOBBRIDGE_LOCAL_AGENTS": "1", "JOBBRIDGE_LOCAL_AGENT_CONCURRENCY": "2"})
    try:
        config = Path(stack.info["agents"][0])
        assert "concurrency = 2" in config.read_text()  # the setting reaches the agent's file
        transcode = submit(stack, "transcode", {"video_id": "studio-4k", "resolution": "4K", "duration_s": 2})
        genome = submit(stack, "genome_align", {"sample_id": "patient-7", "duration_s": 1})
        seen: set[str] = set()

        def finished() -> bool:
            jobs = [get(stack, transcode), get(stack, genome)]
            seen.update(j["progress"]["message"] for j in jobs if j["progress"])
            return all(j["state"] in ("SUCCEEDED", "FAILED", "CANCELLED") for j in jobs)

        wait_for(finished, 60, interval=0.2, what="both jobs to finish")
        for job_id, last in ((transcode, "package"), (genome, "call variants")):
            job = get(stack, job_id)
            assert job["state"] == "SUCCEEDED", job
            assert job["progress"] == {"fraction": 1.0, "message": last}
            assert events(job, "claimed") == ["agent"]  # the tenant sees the kind of worker only
            assert claimed_by(stack, job_id) == ["agent:local-agent-1"]
        assert get(stack, transcode)["result"]["rendition"] == "4K"
        assert {"package", "call variants"} <= seen
    finally:
        stack.stop()


# --- cancel ----------------------------------------------------------------------------------------------


def test_cancelling_a_running_job_stops_it(bare_stack: RunningStack, agents: Any) -> None:
    agents()
    job_id = submit(bare_stack, "sleep", {"seconds": 300, "steps": 300})
    wait_state(bare_stack, job_id, "RUNNING")
    with bare_stack.client("acme") as api:
        assert api.post(f"/jobs/{job_id}/cancel").status_code == 200
    job = wait_state(bare_stack, job_id, "CANCELLED", "SUCCEEDED", "FAILED")
    assert job["state"] == "CANCELLED" and job["attempt"] == 1


# --- an agent dies, freezes, is told to stop -------------------------------------------------------------


def test_kill_9_mid_job_a_fresh_agent_finishes_it_once_on_attempt_2(bare_stack: RunningStack, agents: Any,
                                                                   sweeper: SweeperThread) -> None:
    first = agents()
    job_id = submit(bare_stack, "sleep", {"seconds": 6, "steps": 6})
    wait_for(lambda: (j := get(bare_stack, job_id))["state"] == "RUNNING" and j["progress"], 60, interval=0.2, what="progress")
    first.signal(signal.SIGKILL)
    first.wait(10)
    # when a fresh agent comes up (the dead one's message returns and its claim is refused; the
    # lease lapses, the sweeper re-queues the job, the bridge sends attempt 1's message)
    second = agents()
    job = wait_state(bare_stack, job_id, "SUCCEEDED", "FAILED", timeout=120)
    # then it finished once, on attempt 2, by the fresh agent
    assert job["state"] == "SUCCEEDED" and job["attempt"] == 2
    assert claimed_by(bare_stack, job_id) == [first.owner, second.owner]
    assert events(job, "claimed") == ["agent", "agent"]
    assert len(events(job, "lease_expired")) == 1 and len(events(job, "succeeded")) == 1
    assert job["result"] == {"slept_s": 6.0, "steps": 6}


def test_a_killed_agent_leaves_no_job_process_behind(bare_stack: RunningStack, agents: Any) -> None:
    agent = agents()
    job_id = submit(bare_stack, "sleep", {"seconds": 300, "steps": 1})  # silent: it never writes to its pipe
    wait_state(bare_stack, job_id, "RUNNING")
    job_pid = wait_for(lambda: [l["pid"] for l in agent.lines() if l.get("message") == "job process started"], 30, interval=0.2,
                       what="the job process")[0]
    assert _running(job_pid)
    agent.signal(signal.SIGKILL)
    agent.wait(10)
    # the orphan notices its pipe closed and kills itself and its group, long before its 300 s
    wait_for(lambda: not _running(job_pid), 30, interval=0.2, what="the dead agent's job process to end")
    with bare_stack.client("acme") as api:
        api.post(f"/jobs/{job_id}/cancel")


def test_a_frozen_agent_is_fenced_out_after_another_finished_its_job(bare_stack: RunningStack, agents: Any,
                                                                    sweeper: SweeperThread) -> None:
    stale = agents()
    job_id = submit(bare_stack, "sleep", {"seconds": 8, "steps": 8})
    wait_state(bare_stack, job_id, "RUNNING")
    # when the agent freezes past its lease (SIGSTOP: a paused VM) and another agent takes over
    stale.signal(signal.SIGSTOP, group=True)
    try:
        other = agents()
        job = wait_state(bare_stack, job_id, "SUCCEEDED", "FAILED", timeout=120)
    finally:
        stale.signal(signal.SIGCONT, group=True)
    assert job["state"] == "SUCCEEDED" and job["attempt"] == 2
    # then the thawed agent learns it lost the job, and reports nothing
    wait_for(lambda: stale.logged("job abandoned: the lease belongs to another attempt", job_id=job_id), 60, interval=0.3,
             what="the stale agent to abandon the job")
    final = get(bare_stack, job_id)
    assert final == job  # nothing changed after the other agent's success
    assert claimed_by(bare_stack, job_id) == [stale.owner, other.owner] and len(events(final, "succeeded")) == 1


def test_sigterm_drains_finishes_what_it_can_and_releases_the_rest(bare_stack: RunningStack, agents: Any) -> None:
    agent = agents(grace_s=10, kill_grace_s=2, concurrency=2)  # ample for the 1 s job, even on a loaded machine
    short = submit(bare_stack, "sleep", {"seconds": 1, "steps": 2})
    long = submit(bare_stack, "sleep", {"seconds": 300, "steps": 300})
    wait_state(bare_stack, short, "RUNNING", "SUCCEEDED")
    wait_state(bare_stack, long, "RUNNING")
    agent.signal(signal.SIGTERM)
    assert agent.wait(90) == 0
    assert agent.logged("agent stopped")
    assert get(bare_stack, short)["state"] == "SUCCEEDED"
    handed_back = get(bare_stack, long)
    # released: QUEUED at its attempt, no error, no run spent (attempt 2 will be its first run's budget)
    assert handed_back["state"] == "QUEUED" and handed_back["error"] is None
    assert handed_back["history"][-1]["event"] == "released"
    # another agent takes it at once (a fresh message, not a lapsed lease)
    other = agents()
    job = wait_for(lambda: (j := get(bare_stack, long))["state"] == "RUNNING" and j["attempt"] == 2 and j, 90, interval=0.3,
                   what="the other agent to take the job")
    assert claimed_by(bare_stack, long) == [agent.owner, other.owner]
    assert events(job, "lease_expired") == []
    with bare_stack.client("acme") as api:
        api.post(f"/jobs/{long}/cancel")


def test_a_second_signal_stops_at_once(bare_stack: RunningStack, agents: Any) -> None:
    agent = agents(grace_s=600)
    job_id = submit(bare_stack, "sleep", {"seconds": 300, "steps": 300})
    wait_state(bare_stack, job_id, "RUNNING")
    agent.signal(signal.SIGTERM)
    wait_for(lambda: agent.logged("shutting down: no new messages"), 30, interval=0.1, what="the drain to start")
    agent.signal(signal.SIGINT)
    assert agent.wait(30) == 1  # well before the 600 s grace
    job = get(bare_stack, job_id)
    assert job["state"] == "RUNNING" and job["attempt"] == 1  # not reported: its lease lapses
    with bare_stack.client("acme") as api:
        api.post(f"/jobs/{job_id}/cancel")


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# --- the API goes away -------------------------------------------------------------------------------------


def _api_pid(stack: RunningStack) -> int:
    """The stack's uvicorn: the child of the stack process whose command line runs it."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == stack.process.pid and b"uvicorn" in cmdline:
            return int(entry.name)
    raise AssertionError("the stack's API process was not found")


def test_the_api_stopped_for_30_s_loses_no_job(bare_stack: RunningStack, agents: Any, sweeper: SweeperThread) -> None:
    agent = agents(concurrency=2, lease_s=60, heartbeat_s=5, visibility_s=60)
    jobs = [submit(bare_stack, "sleep", {"seconds": 4, "steps": 4}) for _ in range(4)]
    wait_for(lambda: sum(get(bare_stack, j)["state"] == "RUNNING" for j in jobs) >= 1, 60, interval=0.2, what="a running job")
    api_pid = _api_pid(bare_stack)
    os.kill(api_pid, signal.SIGSTOP)
    try:
        time.sleep(30)
        assert agent.process.poll() is None  # network errors never kill the agent
    finally:
        os.kill(api_pid, signal.SIGCONT)
    finals = [wait_state(bare_stack, j, "SUCCEEDED", "FAILED", "CANCELLED", timeout=180) for j in jobs]
    assert [j["state"] for j in finals] == ["SUCCEEDED"] * 4, finals
    assert all(len(events(j, "succeeded")) == 1 for j in finals), [j["history"] for j in finals]
    assert agent.process.poll() is None


def _messages(stack: RunningStack, queue: str) -> int:
    attributes = stack.aws("sqs").get_queue_attributes(
        QueueUrl=stack.queue_url(queue),
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"]) + int(attributes["ApproximateNumberOfMessagesNotVisible"])


class SwitchableApi:
    """A front for the stack's API on its own port, as API Gateway in front of an API that is down:
    while ``down``, every request is answered 503 and never reaches the API (SIGSTOP on the API
    would queue the agent's timed-out requests in the kernel and replay them all when it resumes)."""

    def __init__(self, target: str) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        import httpx

        self.down = False
        self.lose_claim_answers = False  # forward each job's first claim, then drop its answer
        self.lost: set[str] = set()
        front = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if front.lose_claim_answers and self.path.endswith("/claim") and self.path not in front.lost:
                    front.lost.add(self.path)
                    httpx.post(target + self.path, content=body, timeout=30,
                               headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                    self.close_connection = True  # the claim landed; its answer never arrives
                    return
                if front.down:
                    status, headers, content = 503, {"Content-Type": "application/json"}, b'{"title": "down"}'
                else:
                    answer = httpx.post(target + self.path, content=body, timeout=30,
                                        headers={k: v for k, v in self.headers.items() if k.lower() != "host"})
                    status, headers, content = answer.status_code, {"Content-Type": answer.headers.get(
                        "content-type", "application/json")}, answer.content
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.timeout(600)  # the outage itself takes 90 s, beside the stack's start
def test_queued_private_jobs_outlive_an_api_outage_longer_than_five_receives(bare_stack: RunningStack,
                                                                            agents: Any) -> None:
    # given private jobs waiting in the queue (the template's redrive: MaxReceiveCount 5, then the
    # PrivateDLQ, whose handler fails the job) ...
    jobs = [submit(bare_stack, "sleep", {"seconds": 1, "steps": 1}) for _ in range(3)]
    wait_for(lambda: _messages(bare_stack, "PrivateQueue") >= 3, 60, interval=0.3, what="the jobs' messages")
    front = SwitchableApi(bare_stack.api_url)
    try:
        # ... when the API answers 503 to an agent that comes up: a claim fails at once and was
        # retried after a backoff of at most 1, 2, 4, 8, 16 s, so 90 s is well past five receives'
        # worth had each failed claim handed its message back
        front.down = True
        agent = agents(concurrency=2, api_url=front.url, api_max_attempts=1, wait_s=1)
        wait_for(lambda: agent.logged("could not claim the job; holding its message and trying again"), 60, interval=0.3,
                 what="a claim to fail")
        time.sleep(90)
        assert agent.process.poll() is None
        front.down = False
        # then, once the API is back, every job runs, once, on its first attempt, and none was dead-lettered
        finals = [wait_state(bare_stack, j, "SUCCEEDED", "FAILED", "CANCELLED", timeout=180) for j in jobs]
    finally:
        front.close()
    assert [j["state"] for j in finals] == ["SUCCEEDED"] * 3, finals
    assert all(j["attempt"] == 1 and claimed_by(bare_stack, j["job_id"]) == [agent.owner] for j in finals), finals
    assert _messages(bare_stack, "PrivateDLQ") == 0


def job_id_in(path: str) -> str:
    return path.split("/")[-2]


def test_a_claim_whose_answer_is_lost_runs_the_job_once_on_its_first_attempt(bare_stack: RunningStack,
                                                                             agents: Any) -> None:
    # given an agent whose every job's first claim lands but whose answer is lost on the way back
    front = SwitchableApi(bare_stack.api_url)
    front.lose_claim_answers = True
    try:
        agent = agents(concurrency=2, api_url=front.url, api_max_attempts=2)
        jobs = [submit(bare_stack, "sleep", {"seconds": 1, "steps": 1}) for _ in range(2)]
        finals = [wait_state(bare_stack, j, "SUCCEEDED", "FAILED", "CANCELLED", timeout=120) for j in jobs]
    finally:
        front.close()
    # then the agent's retry of each claim was answered as made: one claim, one run, attempt 1
    assert len({path for path in front.lost if job_id_in(path) in jobs}) == 2
    assert [j["state"] for j in finals] == ["SUCCEEDED"] * 2, finals
    assert all(j["attempt"] == 1 and claimed_by(bare_stack, j["job_id"]) == [agent.owner] for j in finals), finals
    assert all(events(j, "lease_expired") == [] for j in finals)
