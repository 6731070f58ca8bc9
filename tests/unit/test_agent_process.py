"""The agent's ProcessExecutor: the job's function in a child process, stopped cooperatively
first and killed past the grace period (real child processes, no network)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from jobbridge.errors import JobCancelled, JobFailure
from jobbridge.registry import load_registry
from jobbridge.runner import JobTimeout, LeaseLost
from jobbridge_agent.process import AgentShutdown, JobProcessDied, ProcessExecutor

MODULES = ("fixtures_jobs.agent_jobs",)


@pytest.fixture(scope="module", autouse=True)
def registry() -> Iterator[Any]:
    """The test job types, registered in this process for this module only (other tests count
    the registry's types)."""
    from jobbridge.registry import REGISTRY

    load_registry()  # the built-in types stay
    before = set(REGISTRY.names())
    yield load_registry(MODULES)
    for name in set(REGISTRY.names()) - before:
        REGISTRY._types.pop(name)  # no public unregister: as tests/unit/test_registry.py does
    import sys

    sys.modules.pop("fixtures_jobs.agent_jobs", None)  # so a later load registers them again


class FakeCtx:
    """What the runner's RunContext offers the executor, with switches for the test."""

    def __init__(self, remaining_s: float = 60.0) -> None:
        self.job_id = "job_test"
        self.attempt = 1
        self.logger = logging.getLogger("test")
        self.deadline = time.monotonic() + remaining_s
        self.cancel = False
        self.lost = False
        self.seen: list[tuple[float, str]] = []

    def remaining_s(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    def raise_if_stopping(self) -> None:
        if self.lost:
            raise LeaseLost(self.job_id)
        if self.cancel:
            raise JobCancelled(self.job_id)
        if time.monotonic() >= self.deadline:
            raise JobTimeout(self.job_id)

    def progress(self, fraction: float, message: str = "") -> None:
        self.raise_if_stopping()
        self.seen.append((fraction, message))


@pytest.fixture(scope="module", params=["forkserver"])
def context(request: pytest.FixtureRequest) -> Any:
    return multiprocessing.get_context(request.param)


@pytest.fixture
def pids() -> Iterator[list[int]]:
    started: list[int] = []
    yield started
    for pid in started:  # nothing may outlive a test
        assert not _alive(pid), f"job process {pid} is still running"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/stat")
    return not (status.exists() and status.read_text().split(")")[-1].split()[0] == "Z")


def executor(context: Any, pids: list[int], **kw: Any) -> ProcessExecutor:
    return ProcessExecutor(job_modules=MODULES, context=context, on_start=pids.append, **{"kill_grace_s": 1.0, **kw})


def run(ex: ProcessExecutor, job_type: str, params: dict[str, Any], ctx: FakeCtx) -> Any:
    jt = load_registry(MODULES).get(job_type)
    return ex(jt, jt.parse_params(params), ctx)


def test_result_and_progress_come_back(context: Any, pids: list[int]) -> None:
    ctx = FakeCtx()
    value = run(executor(context, pids), "transcode", {"video_id": "v1", "resolution": "4K", "duration_s": 0.2}, ctx)
    assert value == {"video_id": "v1", "rendition": "4K", "output": "renditions/v1/4K.mp4"}
    assert [m for _, m in ctx.seen] == ["probe", "decode", "encode", "package"]
    assert ctx.seen[-1][0] == 1.0
    assert pids and pids[0] != os.getpid()


def test_cooperative_cancel_stops_the_job_before_the_kill(context: Any, pids: list[int]) -> None:
    # given a job that honours ctx (builtin sleep), and a kill grace no test waits for: only a
    # cooperative stop can end this test (else pytest's timeout fails it)
    ctx = FakeCtx()
    ex = executor(context, pids, kill_grace_s=3600.0)
    import threading

    threading.Timer(0.5, lambda: setattr(ctx, "cancel", True)).start()
    # when a cancel arrives, then the child stops by itself
    with pytest.raises(JobCancelled):
        run(ex, "sleep", {"seconds": 60, "steps": 2}, ctx)


def test_a_job_that_ignores_cancel_is_killed_after_the_grace(context: Any, pids: list[int]) -> None:
    ctx = FakeCtx()
    ctx.cancel = True
    with pytest.raises(JobCancelled):
        run(executor(context, pids, kill_grace_s=0.5), "stubborn", {"seconds": 600}, ctx)


def test_a_job_past_its_timeout_is_stopped_as_a_timeout(context: Any, pids: list[int]) -> None:
    ctx = FakeCtx(remaining_s=0.5)
    with pytest.raises(JobTimeout):
        run(executor(context, pids, kill_grace_s=0.5), "stubborn", {"seconds": 600}, ctx)


def test_lost_lease_stops_without_a_report(context: Any, pids: list[int]) -> None:
    ctx = FakeCtx()
    ctx.lost = True
    with pytest.raises(LeaseLost):
        run(executor(context, pids, kill_grace_s=0.5), "stubborn", {"seconds": 600}, ctx)


def test_agent_shutdown_stops_the_attempt_as_a_release(context: Any, pids: list[int]) -> None:
    from jobbridge.errors import WorkerShutdown

    with pytest.raises(AgentShutdown) as caught:
        run(executor(context, pids, kill_grace_s=0.5, agent_stop=lambda: "shutdown"), "stubborn", {"seconds": 600},
            FakeCtx())
    assert isinstance(caught.value, WorkerShutdown)  # the runner releases the job: no attempt spent


def test_forced_stop_kills_at_once(context: Any, pids: list[int]) -> None:
    # kill_grace_s is an hour: only "force" can explain the job ending
    with pytest.raises(LeaseLost):
        run(executor(context, pids, kill_grace_s=3600, agent_stop=lambda: "force"), "stubborn", {"seconds": 600},
            FakeCtx())


def test_the_kill_takes_the_jobs_own_children_too(context: Any, pids: list[int], tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    ctx = FakeCtx()
    import threading

    def cancel_when_started() -> None:
        while not pid_file.exists():
            time.sleep(0.05)
        ctx.cancel = True

    threading.Thread(target=cancel_when_started, daemon=True).start()
    with pytest.raises(JobCancelled):
        run(executor(context, pids, kill_grace_s=0.5), "spawner", {"pid_file": str(pid_file)}, ctx)
    grandchild = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


def test_a_process_that_dies_is_a_retryable_failure(context: Any, pids: list[int]) -> None:
    with pytest.raises(JobProcessDied) as caught:
        run(executor(context, pids), "crash", {"code": 3}, FakeCtx())
    assert caught.value.retryable and "code 3" in str(caught.value)


def test_failures_keep_their_type_message_and_retryability(context: Any, pids: list[int]) -> None:
    with pytest.raises(JobFailure) as permanent:
        run(executor(context, pids), "fail", {"message": "no such file", "retryable": False}, FakeCtx())
    assert type(permanent.value).__name__ == "PermanentError" and not permanent.value.retryable
    assert str(permanent.value) == "no such file"

    ctx = FakeCtx()
    with pytest.raises(JobFailure) as bug:
        run(executor(context, pids), "progress_then_fail", {"steps": 2}, ctx)
    assert type(bug.value).__name__ == "ZeroDivisionError" and bug.value.retryable
    assert [m for _, m in ctx.seen] == ["step 1", "step 2"]
