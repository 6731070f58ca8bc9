"""Every accepted job has a deadline while it waits, and the sweeper reads only what is due
(jobbridge.sweeper, the QUEUED side of the sparse active-index): a dispatched job's ``due_at`` is
when the sweeper must look at it next (re-send, or its queue-wait deadline), never its creation."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from jobbridge.dispatch import REDISPATCH_AFTER_S, Dispatch
from jobbridge.lifecycle import JobLifecycle
from jobbridge.models import JobCreate, State
from jobbridge.registry import load_registry
from jobbridge.service import JobService
from jobbridge.sweeper import Sweeper

REGISTRY = load_registry()
GRACE_S = 120


class FakeDispatcher:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, dispatches: Any) -> tuple[list[Any], list[Any]]:
        items = list(dispatches)
        self.sent.extend(items)
        return items, []


@pytest.fixture
def dispatcher() -> FakeDispatcher:
    return FakeDispatcher()


@pytest.fixture
def sweeper(store, dispatcher) -> Sweeper:
    return Sweeper(JobLifecycle(store, REGISTRY), dispatcher, dispatch_grace_s=GRACE_S)  # type: ignore[arg-type]


def submit(store, **request: Any):
    body = {"type": "echo", "params": {"n": 1}, "target": "private", **request}
    return JobService(store, REGISTRY).submit("acme", JobCreate(**body)).job


def dispatched(store, job):
    """What the bridge does once the job's message is sent (outbox.relay)."""
    sent = Dispatch(record_id="1", job_id=job.job_id, route=job.route, attempt=job.attempt, correlation_id=None,
                    queue_deadline=job.queue_deadline)
    assert store.mark_dispatched(job.job_id, job.attempt, sent.look_again_at(store.clock()))
    return store.get(job.job_id)


def test_a_waiting_job_has_no_ttl_only_a_final_one_does(store, raw_item) -> None:
    job = submit(store)
    assert "expires_at" not in raw_item(job.job_id)  # TTL never deletes an active job
    store.claim(job.job_id, "w", 60, expected_attempt=0)
    assert "expires_at" not in raw_item(job.job_id)
    store.complete(job.job_id, 1, {"ok": True})
    assert "expires_at" in raw_item(job.job_id)


def test_the_queue_wait_is_the_job_types_unless_the_submit_sets_one_within_bounds(store, raw_item) -> None:
    default = submit(store)
    chosen = submit(store, queue_wait_s=600)
    assert int(raw_item(default.job_id)["queue_wait_s"]["N"]) == REGISTRY.get("echo").queue_wait_s
    assert int(raw_item(chosen.job_id)["queue_wait_s"]["N"]) == 600
    for outside in (59, 7 * 86400 + 1):
        with pytest.raises(ValidationError) as caught:
            JobCreate(type="echo", queue_wait_s=outside)
        assert caught.value.errors()[0]["loc"] == ("queue_wait_s",)


def test_a_job_still_queued_past_its_queue_wait_fails_as_queue_wait_expired(store, sweeper, clock) -> None:
    job = dispatched(store, submit(store, queue_wait_s=600))
    clock.advance(590)
    sweeper.sweep()
    assert store.get(job.job_id).state is State.QUEUED  # not yet
    clock.advance(GRACE_S + 20)  # the sweeper looks once the deadline is past by its grace

    report = sweeper.sweep()

    failed = store.get(job.job_id)
    assert report.queue_waits_expired == 1
    assert failed.state is State.FAILED and failed.error is not None
    assert (failed.error.type, failed.error.retryable) == ("QueueWaitExpired", False)
    assert [h.event for h in failed.history] == ["submitted", "failed"]


def test_a_claim_that_lands_first_beats_the_deadline(store, sweeper, clock) -> None:
    job = dispatched(store, submit(store, queue_wait_s=600))
    clock.advance(600 + GRACE_S)
    store.claim(job.job_id, "w", 600, expected_attempt=0)
    sweeper.sweep()
    assert store.get(job.job_id).state is State.RUNNING


def test_a_dispatched_job_is_sent_again_after_the_redispatch_interval_then_not_before_the_next(
        store, sweeper, dispatcher, clock) -> None:
    job = dispatched(store, submit(store, queue_wait_s=7 * 86400))
    clock.advance(REDISPATCH_AFTER_S - 60)
    sweeper.sweep()
    assert dispatcher.sent == []  # its message may still be in the queue
    clock.advance(60 + GRACE_S)

    report = sweeper.sweep()
    sweeper.sweep()

    # re-sent once (a lost or expired message is replaced; a duplicate is dropped by the claim's fence)
    assert report.resent == 1 and [d.job_id for d in dispatcher.sent] == [job.job_id]
    assert dispatcher.sent[0].attempt == 0
    assert store.get(job.job_id).state is State.QUEUED


def test_the_sweeper_reads_no_dispatched_job_that_is_not_due(store, sweeper, clock, monkeypatch) -> None:
    # given a backlog of private jobs waiting for an agent, and one job whose lease lapsed
    for _ in range(30):
        dispatched(store, submit(store))
    lapsed = submit(store, target="public")
    store.claim(lapsed.job_id, "lambda", 60, expected_attempt=0)
    clock.advance(600)
    read: list[str] = []
    active_jobs = store.active_jobs

    def counting(state, due_before, limit=100):
        for item in active_jobs(state, due_before, limit):
            read.append(item["job_id"])
            yield item

    monkeypatch.setattr(store, "active_jobs", counting)

    report = sweeper.sweep()

    # then only the lapsed lease was read: the backlog is not due
    assert read == [lapsed.job_id]
    assert report.leases_requeued == 1
