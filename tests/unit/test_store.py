"""JobStore against template.yaml's JobsTable in moto's in-process mock (no network).

The state machine under test (jobbridge.states):

    QUEUED ──claim──> RUNNING ──complete──> SUCCEEDED
      │                 │ ├──fail, attempts left──> QUEUED
      │                 │ ├──fail, none left──> FAILED
      │                 │ └──cancel acknowledged──> CANCELLED
      └──cancel──> CANCELLED
"""

from __future__ import annotations

import base64
import json
from typing import Any, Callable

import pytest

from jobbridge.errors import (
    DependencyUnavailable,
    InvalidCursor,
    InvalidTransition,
    ItemTooLarge,
    JobAlreadyFinal,
    JobNotFound,
    StaleAttempt,
)
from jobbridge.ids import iso, parse_iso
from jobbridge.limits import ERROR_MESSAGE_MAX_CHARS, HISTORY_DETAIL_MAX_CHARS, HISTORY_KEEP_NEWEST
from jobbridge.models import HistoryEntry, Job, JobError, Progress, State
from jobbridge.store import JobStore, encode_cursor

LEASE_S = 60
ACTIVE_ATTRS = ("active_state", "due_at")
BOOM = JobError(type="Boom", message="it broke", retryable=True)


@pytest.fixture
def queued(store: JobStore, make_job) -> Job:
    job, created = store.create(make_job())
    assert created
    return job


@pytest.fixture
def running(store: JobStore, queued: Job) -> Job:
    return store.claim(queued.job_id, "worker-1", LEASE_S)


def history_events(job: Job) -> list[str]:
    return [entry.event for entry in job.history]


# --- create ---------------------------------------------------------------------------------------------


def test_create_is_one_conditional_put(store: JobStore, ddb, call_log, make_job, raw_item) -> None:
    # given a watched client
    call_log.watch(ddb)
    job = make_job()

    # when the job is created
    stored, created = store.create(job)

    # then exactly one PutItem was made, conditional on the id being new
    assert call_log.operations() == ["PutItem"]
    (put,) = call_log.params("PutItem")
    assert put["ConditionExpression"] == "attribute_not_exists(job_id)"
    assert created and stored == job
    item = raw_item(job.job_id)
    assert item["state"] == {"S": "QUEUED"}
    assert item["active_state"] == {"S": "QUEUED"}
    assert item["due_at"] == {"S": job.created_at}


def test_creating_an_existing_id_returns_the_stored_job_in_the_same_call(store, ddb, call_log, make_job, raw_item) -> None:
    first = make_job(params={"n": 1})
    store.create(first)
    before = raw_item(first.job_id)
    call_log.watch(ddb)

    again, created = store.create(make_job(job_id=first.job_id, params={"n": 2}))

    assert created is False
    assert again == first  # the existing record, not the new request
    assert call_log.operations() == ["PutItem"]  # read back from the failed condition, not a GetItem
    assert raw_item(first.job_id) == before


# --- get ------------------------------------------------------------------------------------------------


def test_get_returns_the_job_for_its_tenant(store, queued) -> None:
    assert store.get(queued.job_id, queued.tenant) == queued
    assert store.get(queued.job_id) == queued


def test_get_for_another_tenant_is_not_found(store, queued) -> None:
    with pytest.raises(JobNotFound) as caught:
        store.get(queued.job_id, "someone-else")
    assert caught.value.job_id == queued.job_id


def test_get_of_an_unknown_id_is_not_found(store) -> None:
    with pytest.raises(JobNotFound):
        store.get("job_0000000000000000000000000z", "acme")


def test_a_missing_table_is_a_dependency_error(ddb) -> None:
    store = JobStore("no-such-table", client=ddb)
    with pytest.raises(DependencyUnavailable) as caught:
        store.get("job_0000000000000000000000000z")
    assert caught.value.dependency == "dynamodb"
    with pytest.raises(DependencyUnavailable):
        store.ping()


# --- list -----------------------------------------------------------------------------------------------


def make_many(store: JobStore, make_job, count: int, **fields: Any) -> list[Job]:
    return [store.create(make_job(**fields))[0] for _ in range(count)]


def test_list_is_newest_first_and_only_the_tenant_jobs(store, make_job, tenant) -> None:
    jobs = make_many(store, make_job, 4)
    make_many(store, make_job, 2, tenant="other-tenant")

    page, cursor = store.list_jobs(tenant)

    assert [j.job_id for j in page] == [j.job_id for j in reversed(jobs)]
    assert cursor is None


def test_cursor_paging_covers_every_job_exactly_once(store, make_job, tenant) -> None:
    jobs = make_many(store, make_job, 7)
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    for _ in range(10):
        page, cursor = store.list_jobs(tenant, limit=3, cursor=cursor)
        seen.extend(j.job_id for j in page)
        sizes.append(len(page))
        if cursor is None:
            break
    assert sizes == [3, 3, 1]
    assert seen == [j.job_id for j in reversed(jobs)]


def test_a_last_full_page_has_no_cursor(store, make_job, tenant) -> None:
    make_many(store, make_job, 3)
    page, cursor = store.list_jobs(tenant, limit=3)
    assert len(page) == 3 and cursor is None


def list_all(store: JobStore, tenant: str, **filters: Any) -> tuple[list[str], list[int]]:
    seen: list[str] = []
    sizes: list[int] = []
    cursor = None
    for _ in range(100):
        page, cursor = store.list_jobs(tenant, cursor=cursor, **filters)
        seen.extend(j.job_id for j in page)
        sizes.append(len(page))
        if cursor is None:
            return seen, sizes
    raise AssertionError("the listing never ended")


def test_filters_by_state_and_type_with_a_limit_across_pages(store, make_job, tenant) -> None:
    # given 130 jobs (more than one DynamoDB page of 100) where few match
    expected: list[str] = []
    for index in range(130):
        job = store.create(make_job(type="sleep" if index % 13 == 0 else "echo"))[0]
        if index % 26 == 0:
            store.cancel(job.job_id, tenant)
        elif job.type == "sleep":
            expected.append(job.job_id)

    # when the queued sleep jobs are listed 2 at a time
    seen, sizes = list_all(store, tenant, state=State.QUEUED, job_type="sleep", limit=2)

    # then every match comes once, newest first, in full pages but the last
    assert seen == list(reversed(expected))
    assert len(expected) == 5 and sizes[:-1] == [2] * (len(sizes) - 1)


def test_a_filter_alone_lists_only_matching_jobs(store, make_job, tenant) -> None:
    echo = make_many(store, make_job, 3)
    sleep = make_many(store, make_job, 2, type="sleep")
    store.cancel(echo[0].job_id, tenant)

    assert list_all(store, tenant, job_type="sleep", limit=10)[0] == [j.job_id for j in reversed(sleep)]
    assert list_all(store, tenant, state=State.CANCELLED, limit=10)[0] == [echo[0].job_id]


def another_tenants_cursor(store: JobStore, make_job, tenant: str) -> str:
    make_many(store, make_job, 3, tenant="other-tenant")
    _, cursor = store.list_jobs("other-tenant", limit=1)
    assert cursor
    return cursor


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor",
        "%%%",
        base64.urlsafe_b64encode(b"[1,2]").decode(),
        base64.urlsafe_b64encode(b'{"t":"x"}').decode(),
        encode_cursor("TENANT", {"job_id": "j", "tenant": "TENANT"}),  # key of another listing
        encode_cursor("TENANT", {"job_id": "j", "tenant": "other", "created_at": "c"}),  # tampered key
    ],
    ids=["text", "not-base64", "not-an-object", "no-key", "wrong-key-shape", "tampered-tenant"],
)
def test_an_invalid_cursor_is_refused(store, tenant, cursor: str) -> None:
    with pytest.raises(InvalidCursor):
        store.list_jobs(tenant, cursor=cursor.replace("TENANT", tenant))


def test_another_tenants_cursor_is_refused(store, make_job, tenant) -> None:
    cursor = another_tenants_cursor(store, make_job, tenant)
    with pytest.raises(InvalidCursor):
        store.list_jobs(tenant, cursor=cursor)


def test_a_cursor_whose_key_tenant_was_rewritten_is_refused(store, make_job, tenant) -> None:
    cursor = another_tenants_cursor(store, make_job, tenant)
    data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    data["t"] = tenant  # claims to be ours, but the key still points into the other tenant's jobs
    forged = base64.urlsafe_b64encode(json.dumps(data).encode()).decode()
    with pytest.raises(InvalidCursor):
        store.list_jobs(tenant, cursor=forged)


# --- cancel ---------------------------------------------------------------------------------------------


def test_cancel_of_a_queued_job_cancels_it_at_once(store, queued, raw_item) -> None:
    job = store.cancel(queued.job_id, queued.tenant)
    assert job.state is State.CANCELLED
    assert job.cancel_requested is True
    assert job.finished_at is not None and job.expires_at is not None
    assert history_events(job) == ["submitted", "cancelled"]
    assert not set(ACTIVE_ATTRS) & set(raw_item(job.job_id))


def test_cancel_of_a_running_job_only_requests_it(store, running, raw_item) -> None:
    job = store.cancel(running.job_id, running.tenant)
    assert job.state is State.RUNNING
    assert job.cancel_requested is True
    assert job.finished_at is None
    assert history_events(job) == ["submitted", "claimed", "cancel_requested"]
    assert raw_item(job.job_id)["active_state"] == {"S": "RUNNING"}


def test_cancel_of_a_final_job_is_refused(store, queued) -> None:
    store.cancel(queued.job_id, queued.tenant)
    with pytest.raises(JobAlreadyFinal) as caught:
        store.cancel(queued.job_id, queued.tenant)
    assert caught.value.state == "CANCELLED"


def test_cancel_by_another_tenant_is_not_found_and_changes_nothing(store, queued, raw_item) -> None:
    before = raw_item(queued.job_id)
    with pytest.raises(JobNotFound):
        store.cancel(queued.job_id, "someone-else")
    assert raw_item(queued.job_id) == before


def test_cancel_of_an_unknown_job_is_not_found(store, tenant) -> None:
    with pytest.raises(JobNotFound):
        store.cancel("job_0000000000000000000000000z", tenant)


# --- claim, heartbeat, progress -----------------------------------------------------------------------


def test_claim_takes_a_lease_and_counts_the_attempt(store, queued, clock, raw_item) -> None:
    job = store.claim(queued.job_id, "worker-1", LEASE_S)

    assert job.state is State.RUNNING
    assert job.attempt == 1
    assert job.lease_owner == "worker-1"
    lease = parse_iso(job.lease_expires_at)
    assert 59 <= (lease - parse_iso(job.started_at)).total_seconds() <= 61
    assert job.version == queued.version + 1
    item = raw_item(job.job_id)
    assert item["active_state"] == {"S": "RUNNING"}
    assert item["due_at"] == {"S": job.lease_expires_at}  # the sweeper looks again when the lease lapses
    assert history_events(job) == ["submitted", "claimed"]
    assert job.history[-1].detail == "worker-1"


def test_a_second_claim_is_refused(store, running) -> None:
    with pytest.raises(InvalidTransition) as caught:
        store.claim(running.job_id, "worker-2", LEASE_S)
    assert caught.value.state == "RUNNING"
    assert not isinstance(caught.value, JobAlreadyFinal)
    assert store.get(running.job_id).lease_owner == "worker-1"


def test_a_claim_for_another_dispatch_attempt_is_refused(store, queued) -> None:
    with pytest.raises(InvalidTransition):
        store.claim(queued.job_id, "worker-1", LEASE_S, expected_attempt=1)
    assert store.claim(queued.job_id, "worker-1", LEASE_S, expected_attempt=0).attempt == 1


def test_claim_of_an_unknown_job_is_not_found(store) -> None:
    with pytest.raises(JobNotFound):
        store.claim("job_0000000000000000000000000z", "w", LEASE_S)


def test_heartbeat_extends_the_lease_records_progress_and_reports_cancel(store, running, clock) -> None:
    clock.advance(30)
    job = store.heartbeat(running.job_id, 1, "worker-1", LEASE_S, Progress(fraction=0.5, message="half"))
    assert job.lease_expires_at > running.lease_expires_at
    assert job.progress == Progress(fraction=0.5, message="half")
    assert job.cancel_requested is False

    store.cancel(running.job_id, running.tenant)
    assert store.heartbeat(running.job_id, 1, "worker-1", LEASE_S).cancel_requested is True


def test_set_progress_records_progress_for_the_current_attempt(store, running) -> None:
    job = store.set_progress(running.job_id, 1, Progress(fraction=0.25))
    assert job.progress.fraction == 0.25
    assert job.state is State.RUNNING


def test_heartbeat_of_a_queued_job_is_refused(store, queued) -> None:
    with pytest.raises(InvalidTransition):
        store.heartbeat(queued.job_id, 0, "worker-1", LEASE_S)


# --- settle -----------------------------------------------------------------------------------------------


def test_complete_succeeds_with_the_result(store, running, raw_item) -> None:
    result = {"value": 0.1, "text": "ünï", "nested": [1, {"x": None}]}
    job = store.complete(running.job_id, 1, result)

    assert job.state is State.SUCCEEDED
    assert job.result == result
    assert job.finished_at and job.expires_at
    assert job.lease_expires_at is None
    assert history_events(job) == ["submitted", "claimed", "succeeded"]
    item = raw_item(job.job_id)
    assert not set(ACTIVE_ATTRS) & set(item)
    assert json.loads(item["result"]["S"]) == result
    assert store.get(job.job_id).result == result


def test_fail_with_attempts_left_requeues_after_the_delay(store, running, raw_item, clock) -> None:
    store.mark_dispatched(running.job_id, 0)  # no-op (running), but a retry must clear it anyway
    job = store.fail(running.job_id, 1, BOOM, retry_delay_s=30)

    assert job.state is State.QUEUED
    assert job.attempt == 1
    assert job.error.message == "it broke" and job.error.attempt == 1
    assert job.lease_owner is None and job.lease_expires_at is None and job.dispatched_at is None
    assert 29 <= (parse_iso(job.not_before) - clock.now).total_seconds() <= 30
    item = raw_item(job.job_id)
    assert item["active_state"] == {"S": "QUEUED"}
    assert item["due_at"] == {"S": job.not_before}
    assert history_events(job) == ["submitted", "claimed", "retry_scheduled"]


def test_fail_without_attempts_left_is_final(store, running, raw_item) -> None:
    job = store.fail(running.job_id, 1, BOOM.model_copy(update={"retryable": False}), retry_delay_s=None)
    assert job.state is State.FAILED
    assert job.error.type == "Boom" and job.error.retryable is False
    assert job.finished_at is not None
    assert not set(ACTIVE_ATTRS) & set(raw_item(job.job_id))
    assert history_events(job) == ["submitted", "claimed", "failed"]


def test_acknowledge_cancel_stops_a_running_job(store, running, raw_item) -> None:
    store.cancel(running.job_id, running.tenant)
    job = store.acknowledge_cancel(running.job_id, 1)
    assert job.state is State.CANCELLED
    assert not set(ACTIVE_ATTRS) & set(raw_item(job.job_id))
    assert history_events(job) == ["submitted", "claimed", "cancel_requested", "cancelled"]


def test_a_dead_letter_fails_the_job_queued_at_its_attempt(store, queued) -> None:
    job = store.fail_dead_lettered(queued.job_id, 0, JobError(type="DeadLetter", message="dead-lettered"))
    assert job is not None and job.state is State.FAILED
    assert job.history[-1].event == "failed" and job.history[-1].attempt == 0


def test_a_stale_dead_letter_leaves_a_job_another_worker_runs_alone(store, running, raw_item) -> None:
    # given a duplicate of attempt 0's message, dead-lettered while attempt 1 runs healthily
    before = raw_item(running.job_id)
    # when its dead letter is applied, then nothing changes
    assert store.fail_dead_lettered(running.job_id, 0, JobError(type="DeadLetter", message="stale")) is None
    assert raw_item(running.job_id) == before


def test_a_stale_dead_letter_leaves_a_job_queued_for_a_later_attempt_alone(store, running, raw_item) -> None:
    store.fail(running.job_id, 1, BOOM, retry_delay_s=0)  # QUEUED for attempt 1's message now
    before = raw_item(running.job_id)
    assert store.fail_dead_lettered(running.job_id, 0, JobError(type="DeadLetter", message="stale")) is None
    assert raw_item(running.job_id) == before


def test_a_retried_job_can_be_claimed_again_and_completed(store, running) -> None:
    store.fail(running.job_id, 1, BOOM, retry_delay_s=0)
    again = store.claim(running.job_id, "worker-2", LEASE_S)
    assert again.attempt == 2
    done = store.complete(running.job_id, 2, {"ok": True})
    assert done.state is State.SUCCEEDED
    assert history_events(done) == ["submitted", "claimed", "retry_scheduled", "claimed", "succeeded"]


# --- fencing -----------------------------------------------------------------------------------------------


STALE_WRITES: dict[str, Callable[[JobStore, str, int], Any]] = {
    "heartbeat": lambda s, j, a: s.heartbeat(j, a, "worker-1", LEASE_S),
    "progress": lambda s, j, a: s.set_progress(j, a, Progress(fraction=0.9)),
    "complete": lambda s, j, a: s.complete(j, a, {"stale": True}),
    "fail-retry": lambda s, j, a: s.fail(j, a, BOOM, retry_delay_s=5),
    "fail-final": lambda s, j, a: s.fail(j, a, BOOM, retry_delay_s=None),
    "acknowledge-cancel": lambda s, j, a: s.acknowledge_cancel(j, a),
}


@pytest.mark.parametrize("write", STALE_WRITES.values(), ids=STALE_WRITES.keys())
def test_a_stale_attempt_is_fenced_out(store, running, raw_item, write) -> None:
    # given the job was retried and claimed again (attempt 2)
    store.fail(running.job_id, 1, BOOM, retry_delay_s=0)
    store.claim(running.job_id, "worker-2", LEASE_S)
    before = raw_item(running.job_id)

    # when the first worker writes for attempt 1
    with pytest.raises(StaleAttempt) as caught:
        write(store, running.job_id, 1)

    # then it is told it is stale and nothing changed
    assert caught.value.state == "RUNNING"
    assert raw_item(running.job_id) == before


# --- final states are absorbing ------------------------------------------------------------------------


def to_succeeded(store: JobStore, job: Job) -> None:
    store.complete(job.job_id, 1, {"ok": True})


def to_failed(store: JobStore, job: Job) -> None:
    store.fail(job.job_id, 1, BOOM, retry_delay_s=None)


def to_cancelled(store: JobStore, job: Job) -> None:
    store.cancel(job.job_id, job.tenant)
    store.acknowledge_cancel(job.job_id, 1)


ALL_WRITES: dict[str, Callable[[JobStore, Job], Any]] = {
    "claim": lambda s, j: s.claim(j.job_id, "worker-9", LEASE_S),
    "cancel": lambda s, j: s.cancel(j.job_id, j.tenant),
    **{name: (lambda w: lambda s, j: w(s, j.job_id, 1))(w) for name, w in STALE_WRITES.items()},
}


@pytest.mark.parametrize("finish", [to_succeeded, to_failed, to_cancelled], ids=["SUCCEEDED", "FAILED", "CANCELLED"])
@pytest.mark.parametrize("write", ALL_WRITES.values(), ids=ALL_WRITES.keys())
def test_final_states_are_absorbing(store, running, raw_item, finish, write) -> None:
    finish(store, running)
    before = raw_item(running.job_id)

    with pytest.raises(JobAlreadyFinal) as caught:
        write(store, running)

    assert caught.value.state == before["state"]["S"]
    assert raw_item(running.job_id) == before


@pytest.mark.parametrize("finish", [to_succeeded, to_failed, to_cancelled], ids=["SUCCEEDED", "FAILED", "CANCELLED"])
def test_final_states_ignore_dispatch_and_dead_letter_writes(store, running, raw_item, finish) -> None:
    finish(store, running)
    before = raw_item(running.job_id)

    assert store.mark_dispatched(running.job_id, 1) is False
    assert store.fail_dead_lettered(running.job_id, 1, JobError(type="DeadLetter", message="late")) is None
    assert raw_item(running.job_id) == before


# --- dispatch bookkeeping and the active index ---------------------------------------------------------------


def test_mark_dispatched_records_the_first_send_only(store, queued, clock) -> None:
    assert store.mark_dispatched(queued.job_id, 0) is True
    first = store.get(queued.job_id).dispatched_at
    clock.advance(5)
    assert store.mark_dispatched(queued.job_id, 0) is True
    assert store.get(queued.job_id).dispatched_at == first


def test_mark_dispatched_for_another_attempt_or_a_claimed_job_is_refused(store, queued) -> None:
    assert store.mark_dispatched(queued.job_id, 3) is False
    store.claim(queued.job_id, "worker-1", LEASE_S)
    assert store.mark_dispatched(queued.job_id, 0) is False
    assert store.get(queued.job_id).dispatched_at is None


def test_the_active_index_holds_only_active_jobs(store, make_job, tenant, clock) -> None:
    queued = store.create(make_job())[0]
    running = store.create(make_job())[0]
    store.claim(running.job_id, "worker-1", LEASE_S)
    done = store.create(make_job())[0]
    store.cancel(done.job_id, tenant)

    far_future = iso(clock.now.replace(year=clock.now.year + 1))
    assert [j["job_id"] for j in store.active_jobs(State.QUEUED, far_future)] == [queued.job_id]
    assert [j["job_id"] for j in store.active_jobs(State.RUNNING, far_future)] == [running.job_id]
    assert list(store.active_jobs(State.RUNNING, iso(clock.now))) == []  # its lease has not lapsed


# --- the record's size: DynamoDB's 400 KB, ours to keep --------------------------------------------------


def test_an_item_dynamodb_refuses_as_too_large_is_a_named_error_and_nothing_is_written(store, make_job, raw_item) -> None:
    job = make_job(params={"blob": "x" * 420_000})  # past the service's check: the store's own boundary

    with pytest.raises(ItemTooLarge) as refused:
        store.create(job)

    assert refused.value.job_id == job.job_id
    assert raw_item(job.job_id) == {}


def test_an_update_dynamodb_refuses_as_too_large_is_a_named_error_and_changes_nothing(store, make_job, raw_item) -> None:
    # a record written before the budget (params near the whole limit): completing it cannot fit
    job, _ = store.create(make_job(params={"blob": "x" * 300_000}))
    store.claim(job.job_id, "worker-1", LEASE_S)
    before = raw_item(job.job_id)

    with pytest.raises(ItemTooLarge):
        store.complete(job.job_id, 1, {"blob": "y" * 150_000})

    assert raw_item(job.job_id) == before  # refused whole: still RUNNING, no result


def test_a_second_cancel_of_a_running_job_writes_nothing(store, running, raw_item) -> None:
    first = store.cancel(running.job_id, running.tenant)
    after_first = raw_item(running.job_id)

    again = store.cancel(running.job_id, running.tenant)

    assert again.cancel_requested and again.state is State.RUNNING
    assert again.version == first.version
    assert raw_item(running.job_id) == after_first
    assert history_events(again).count("cancel_requested") == 1


def test_history_keeps_the_first_entry_and_the_newest_ones_and_counts_what_it_dropped(store, make_job) -> None:
    job, _ = store.create(make_job(max_attempts=100))
    for attempt in range(1, 31):  # 1 + 2 x 30 = 61 entries written
        store.claim(job.job_id, f"worker-{attempt}", LEASE_S)
        last = store.fail(job.job_id, attempt, BOOM, retry_delay_s=0)

    read = store.get(job.job_id)
    assert len(read.history) == 1 + HISTORY_KEEP_NEWEST
    assert read.history[0].event == "submitted"
    assert read.history_dropped == 61 - 1 - HISTORY_KEEP_NEWEST
    assert (read.history[-1].event, read.history[-1].attempt) == ("retry_scheduled", 30)
    # the oldest kept: attempt 11's claim and retry
    assert [(e.event, e.attempt) for e in read.history[1:3]] == [("claimed", None), ("retry_scheduled", 11)]
    assert last.attempt == 30


def test_an_error_message_of_any_length_is_stored_cut_to_its_share(store, running) -> None:
    huge = JobError(type="Boom", message="é" * 100_000, retryable=False)

    job = store.fail(running.job_id, 1, huge, retry_delay_s=None)

    assert job.state is State.FAILED
    assert len(job.error.message) <= ERROR_MESSAGE_MAX_CHARS and job.error.message.endswith("(truncated)")
    assert len(job.history[-1].detail) <= HISTORY_DETAIL_MAX_CHARS


def test_a_history_past_its_cap_by_several_entries_is_trimmed_to_the_first_and_the_newest_at_once(
        store, make_job, ddb, jobs_table) -> None:
    # e.g. trims skipped while their writes failed: the next write drops every excess entry
    job = make_job(history=[HistoryEntry(at=iso(parse_iso("2026-01-01T00:00:00.000Z")), state=State.QUEUED,
                                         event=f"e{n}") for n in range(HISTORY_KEEP_NEWEST + 6)])
    store.create(job)

    running = store.claim(job.job_id, "worker-1", LEASE_S)

    events = history_events(running)
    assert events == ["e0"] + [f"e{n}" for n in range(7, HISTORY_KEEP_NEWEST + 6)] + ["claimed"]
    assert running.history_dropped == 6


# --- the route fence: a store scoped to a route touches only that route's jobs ----------------------


def test_a_store_scoped_to_a_public_route_cannot_claim_a_private_job(store: JobStore, make_job, raw_item) -> None:
    from jobbridge.errors import RouteMismatch
    from jobbridge.models import Route

    # given a private job, QUEUED
    job, _ = store.create(make_job(route=Route.PRIVATE))
    lambda_store = store.for_route(Route.LAMBDA)

    # when the Lambda worker's store claims it (with the right attempt)
    with pytest.raises(RouteMismatch) as refused:
        lambda_store.claim(job.job_id, "lambda", LEASE_S, expected_attempt=0)

    # then it is refused by the write's condition, naming both routes, and the job is untouched
    assert refused.value.route == "lambda" and refused.value.job_route == "private"
    assert raw_item(job.job_id)["state"] == {"S": "QUEUED"}
    assert history_events(store.get(job.job_id)) == ["submitted"]


def test_every_transition_of_a_scoped_store_is_conditional_on_its_route(store: JobStore, make_job,
                                                                       ddb, call_log) -> None:
    from jobbridge.errors import RouteMismatch
    from jobbridge.models import Route

    # given a private job claimed by an agent (through an unscoped store)
    job, _ = store.create(make_job(route=Route.PRIVATE))
    running = store.claim(job.job_id, "agent:a1", LEASE_S, expected_attempt=0)
    lambda_store = store.for_route(Route.LAMBDA)
    call_log.watch(ddb)

    # when a public worker that learnt the attempt tries every write of a lease holder
    writes = [
        lambda: lambda_store.heartbeat(job.job_id, running.attempt, "lambda", LEASE_S),
        lambda: lambda_store.complete(job.job_id, running.attempt, {"forged": True}),
        lambda: lambda_store.fail(job.job_id, running.attempt, BOOM, None),
        lambda: lambda_store.acknowledge_cancel(job.job_id, running.attempt),
    ]
    for write in writes:
        with pytest.raises(RouteMismatch):
            write()

    # then each was one conditional UpdateItem carrying the route, and the job is still the agent's
    updates = call_log.params("UpdateItem")
    assert len(updates) == len(writes)
    assert all("#route = :route" in u["ConditionExpression"] for u in updates)
    current = store.get(job.job_id)
    assert current.state is State.RUNNING and current.lease_owner == "agent:a1" and current.result is None


def test_a_scoped_store_serves_its_own_route_as_before(store: JobStore, make_job) -> None:
    from jobbridge.models import Route

    job, _ = store.create(make_job(route=Route.LAMBDA))
    lambda_store = store.for_route(Route.LAMBDA)

    running = lambda_store.claim(job.job_id, "lambda", LEASE_S, expected_attempt=0)
    done = lambda_store.complete(job.job_id, running.attempt, {"ok": True})

    assert done.state is State.SUCCEEDED


def test_a_result_that_is_not_unicode_text_fails_the_job_instead_of_breaking_its_reads(store: JobStore,
                                                                                       make_job) -> None:
    from jobbridge.lifecycle import JobLifecycle
    from jobbridge.models import JobPublic
    from jobbridge.registry import load_registry

    # given a running job whose function returns a string with a lone surrogate (e.g. bytes decoded
    # with errors="surrogateescape", or a \ud800 escape an agent relayed)
    job, _ = store.create(make_job())
    running = store.claim(job.job_id, "lambda", LEASE_S)

    # when the runner reports it
    settled = JobLifecycle(store, load_registry()).complete(job.job_id, running.attempt, {"text": "ok \udc80"})

    # then the attempt failed, saying why, and the job can still be shown
    assert settled.state is State.FAILED and settled.result is None
    assert settled.error is not None and settled.error.type == "ResultNotJSON" and "surrogate" in settled.error.message
    JobPublic.of(store.get(job.job_id)).model_dump_json().encode("utf-8")


# --- release: a worker shutting down hands its job back without spending an attempt ---------------------


def test_release_requeues_the_job_at_its_attempt_for_a_fresh_message(store, running, raw_item) -> None:
    released = store.release(running.job_id, 1, "agent:a shut down")
    assert (released.state, released.attempt, released.releases) == (State.QUEUED, 1, 1)
    assert released.lease_owner is None and released.lease_expires_at is None
    item = raw_item(running.job_id)
    assert "dispatched_at" not in item and item["active_state"] == {"S": "QUEUED"}  # the bridge sends it again
    assert history_events(released)[-1] == "released" and released.history[-1].attempt == 1
    # the next message names attempt 1: its claim makes attempt 2, the budget counts one run only
    again = store.claim(running.job_id, "agent:b", LEASE_S, expected_attempt=1)
    assert (again.attempt, again.attempt_budget) == (2, again.max_attempts + 1)


def test_the_released_lease_stays_fenced_out(store, running) -> None:
    store.release(running.job_id, 1, "shutdown")
    # a late write of the releasing holder, while the job waits and after another claims it
    for _ in range(2):
        for write in (lambda: store.heartbeat(running.job_id, 1, "worker-1", LEASE_S),
                      lambda: store.complete(running.job_id, 1, {"late": True}),
                      lambda: store.fail(running.job_id, 1, BOOM, retry_delay_s=0)):
            with pytest.raises(InvalidTransition):
                write()
        if store.get(running.job_id).state is State.QUEUED:
            store.claim(running.job_id, "worker-2", LEASE_S, expected_attempt=1)
    assert store.get(running.job_id).lease_owner == "worker-2"


def test_release_of_another_attempt_is_refused(store, running) -> None:
    with pytest.raises(StaleAttempt):
        store.release(running.job_id, 2, "shutdown")


def test_release_of_a_job_whose_cancel_was_requested_ends_it_cancelled(store, running) -> None:
    # a worker shutting down after the tenant asked to cancel: the job must not be queued to run again
    store.cancel(running.job_id, running.tenant)

    ended = store.release(running.job_id, 1, "agent:a shut down")

    assert ended.state is State.CANCELLED and ended.releases == 0
    assert history_events(ended)[-1] == "cancelled"
