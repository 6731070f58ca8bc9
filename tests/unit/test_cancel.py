"""Cancel means stop (docs/ARCHITECTURE.md, "The state machine"): once a cancel is requested, the
attempt ends CANCELLED however it ends (a failure, a timeout, a lapsed lease), never FAILED and
never retried with the request still set; a job function that ignores the request is stopped
(CANCELLED, forced) after the runner's grace. Store and runner against moto in process."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel

from jobbridge.lifecycle import JobLifecycle
from jobbridge.models import JobError, Route, State
from jobbridge.registry import Registry, job_type
from jobbridge.runner import Outcome, Runner, RunnerConfig

BOOM = JobError(type="Boom", message="it broke", retryable=True)


def events(job: Any) -> list[str]:
    return [entry.event for entry in job.history]


@pytest.fixture
def cancel_requested(store, make_job) -> Any:
    job, _ = store.create(make_job(max_attempts=3))
    store.claim(job.job_id, "worker-1", 60)
    return store.cancel(job.job_id, job.tenant)


def test_a_retryable_failure_after_a_cancel_request_ends_cancelled_not_retried(store, cancel_requested) -> None:
    ended = store.fail(cancel_requested.job_id, 1, BOOM, retry_delay_s=5)

    assert ended.state is State.CANCELLED
    assert ended.error is not None and ended.error.type == "Boom"  # why the attempt ended, kept
    assert events(ended) == ["submitted", "claimed", "cancel_requested", "cancelled"]


def test_a_final_failure_after_a_cancel_request_ends_cancelled(store, cancel_requested) -> None:
    ended = store.fail(cancel_requested.job_id, 1, BOOM.model_copy(update={"retryable": False}), retry_delay_s=None)
    assert ended.state is State.CANCELLED


def test_a_lapsed_lease_after_a_cancel_request_ends_cancelled_not_requeued(store, make_job) -> None:
    job, _ = store.create(make_job(max_attempts=3))
    store.claim(job.job_id, "worker-that-died", -60)
    store.cancel(job.job_id, job.tenant)

    ended = store.expire_lease(job.job_id, 1, JobError(type="LeaseExpired", message="gone", retryable=True), 5)

    assert ended.state is State.CANCELLED
    assert ended.cancel_requested  # never QUEUED with the flag: no new run starts with a stale cancel


def test_a_stale_attempt_is_still_fenced_out_when_cancel_was_requested(store, cancel_requested) -> None:
    with pytest.raises(Exception) as refused:
        store.fail(cancel_requested.job_id, 7, BOOM, retry_delay_s=5)
    assert type(refused.value).__name__ == "StaleAttempt"
    assert store.get(cancel_requested.job_id).state is State.RUNNING


# --- a job function that ignores the request -----------------------------------------------------------


class _Anything(BaseModel):
    pass


def test_a_running_job_that_ignores_cancel_is_cancelled_forced_after_the_grace(store, make_job) -> None:
    release = threading.Event()
    registry = Registry()

    @job_type("stubborn", params=_Anything, placements={Route.LAMBDA}, timeout_s=120, registry=registry)
    def stubborn(params: Any, ctx: Any) -> dict[str, Any]:
        release.wait(60)  # never looks at ctx: a native library in a loop
        return {"done": True}

    job, _ = store.create(make_job(type="stubborn", max_attempts=3, timeout_s=120))
    runner = Runner(JobLifecycle(store, registry), registry,
                    RunnerConfig(owner="lambda", heartbeat_s=0.1, progress_flush_s=0.05, cancel_grace_s=0.5))
    outcome: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: outcome.update(result=runner.run(job.job_id, expected_attempt=0)))
    thread.start()
    try:
        _wait(lambda: store.get(job.job_id).state is State.RUNNING)
        store.cancel(job.job_id, job.tenant)

        _wait(lambda: store.get(job.job_id).state is State.CANCELLED, timeout=30)
    finally:
        release.set()
        thread.join(30)

    final = store.get(job.job_id)
    assert final.state is State.CANCELLED and final.result is None  # its late result is fenced out
    assert "forced" in (final.history[-1].detail or "")
    assert outcome["result"].outcome is Outcome.CANCELLED


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)
