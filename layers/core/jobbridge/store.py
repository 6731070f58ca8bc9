"""JobStore: the only owner of DynamoDB calls. Every state change is one conditional UpdateItem
that returns the new record (ReturnValues=ALL_NEW) and, when its condition fails, the current
one (ReturnValuesOnConditionCheckFailure=ALL_OLD), which becomes a named domain error:
https://docs.aws.amazon.com/amazondynamodb/latest/APIReference/API_UpdateItem.html

The sparse ``active-index`` holds only QUEUED and RUNNING jobs (``active_state``, ``due_at``):
the sweeper reads it instead of scanning. Final writes remove both attributes.

The record's size is bounded (jobbridge.limits): errors and history details are cut to their
share here, history keeps its first entry and the newest ``HISTORY_KEEP_NEWEST``, and DynamoDB's
refusal of an item over 400 KB becomes ``ItemTooLarge``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator

from botocore.exceptions import BotoCoreError, ClientError

from . import aws
from .dynamo_codec import decode_item, dump_json, encode_item, to_attr
from .errors import (
    DependencyUnavailable,
    InvalidCursor,
    InvalidTransition,
    ItemTooLarge,
    JobAlreadyFinal,
    JobNotFound,
    RouteMismatch,
    StaleAttempt,
)
from .ids import iso, utcnow
from .limits import DYNAMODB_MAX_ITEM_BYTES, HISTORY_KEEP_NEWEST, bounded_error, history_detail
from .models import DEFAULT_QUEUE_WAIT_S, FINAL_STATES, Job, JobError, Progress, Route, State

log = logging.getLogger(__name__)

TENANT_INDEX = "tenant-created-index"
ACTIVE_INDEX = "active-index"
_MAX_LIST_PAGES = 10
# Placeholders for attribute names that are, or may become, DynamoDB reserved words.
_NAMES = {"#state": "state", "#attempt": "attempt", "#tenant": "tenant", "#version": "version", "#history": "history",
          "#route": "route"}
_NO_CANCEL_REQUESTED = "(attribute_not_exists(cancel_requested) OR cancel_requested = :false)"
_UNAVAILABLE_CODES = {
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "ResourceNotFoundException",
}



@dataclass(frozen=True)
class BatchReservation:
    """A job record's AWS Batch submission for one attempt (see ``reserve_batch_submission``)."""

    job: Job
    attempt: int  # the message's attempt the Batch job runs (the claim expects it)
    job_name: str
    token: str  # who holds the reservation: only its holder records the Batch job id
    reserved_at: str
    batch_job_id: str | None = None

    @classmethod
    def of(cls, item: dict[str, Any]) -> "BatchReservation":
        return cls(
            job=Job.model_validate(item),
            attempt=int(item["batch_attempt"]),
            job_name=str(item.get("batch_job_name", "")),
            token=str(item.get("batch_token", "")),
            reserved_at=str(item.get("batch_reserved_at", "")),
            batch_job_id=item.get("batch_job_id"),
        )


class BatchSubmissionReserved(InvalidTransition):
    """This attempt's Batch submission is already reserved (by a duplicate delivery of the message,
    or by a submitter that may have crashed before recording the Batch job id)."""

    def __init__(self, job_id: str, reservation: BatchReservation) -> None:
        super().__init__(job_id, "submit to batch", reservation.job.state.value,
                         f"attempt {reservation.attempt} is already reserved as {reservation.job_name}"
                         + (f" (Batch job {reservation.batch_job_id})" if reservation.batch_job_id else ""))
        self.reservation = reservation


class JobStore:
    """``route`` scopes the store to the jobs of one route (the route fence): every conditional
    write it makes also requires ``route = :route``, so a worker of one route cannot claim, extend
    or settle a job of another (a public worker and a private job) whatever message it was handed.
    A refusal is a RouteMismatch. Unscoped (None): the API's tenant routes, the bridge, the sweeper
    and the dead-letter handler, which serve every route."""

    def __init__(
        self,
        table_name: str,
        *,
        client: Any = None,
        retention_days: int = 30,
        clock: Callable[[], datetime] = utcnow,
        route: Route | None = None,
    ) -> None:
        self.table_name = table_name
        self._client = client
        self.retention = timedelta(days=retention_days)
        self.clock = clock
        self.route = route

    def for_route(self, route: Route) -> "JobStore":
        """This store (same table, client and clock), fenced to the jobs of ``route``."""
        scoped = JobStore(self.table_name, client=self._client, clock=self.clock, route=route)
        scoped.retention = self.retention
        return scoped

    def _route_fenced(self, condition: str, values: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The condition and values with the route fence added, when the store is scoped."""
        if self.route is None:
            return condition, values
        return f"({condition}) AND #route = :route", {**values, ":route": {"S": self.route.value}}

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = aws.client("dynamodb")
        return self._client

    # --- create and read -----------------------------------------------------------------

    def create(self, job: Job) -> tuple[Job, bool]:
        """Record a new job with one conditional PutItem: QUEUED, or already final (a hot job
        type ran in the request, jobbridge.inline; never in the active index).

        Returns ``(job, True)`` when written, or ``(existing, False)`` when a job with this id
        already exists (an idempotent replay), read from the same call's failure.
        """
        record = job.model_dump(mode="json", exclude_none=True)
        if not job.state.is_final:
            record["active_state"] = job.state.value
            record["due_at"] = job.not_before or job.created_at
        try:
            self._call(
                "put_item",
                TableName=self.table_name,
                Item=encode_item(record),
                ConditionExpression="attribute_not_exists(job_id)",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _condition_failed(exc):
                raise
            old = exc.response.get("Item")
            return (self._decode(old) if old else self.get(job.job_id)), False
        return job, True

    def get(self, job_id: str, tenant: str | None = None) -> Job:
        """The job, read consistently (a GET right after the 202 must find it).

        With ``tenant``, another tenant's job is reported as not found: no existence leak.
        """
        out = self._call("get_item", TableName=self.table_name, Key=_key(job_id), ConsistentRead=True)
        item = out.get("Item")
        if not item:
            raise JobNotFound(job_id)
        job = self._decode(item)
        if tenant is not None and job.tenant != tenant:
            raise JobNotFound(job_id)
        return job

    def list_jobs(
        self,
        tenant: str,
        *,
        state: State | None = None,
        job_type: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """A tenant's jobs, newest first, ``limit`` at most, and the cursor of the next page.

        Filters apply after DynamoDB's own Limit, so pages are read until ``limit`` matches are
        found; the cursor is then the key of the last job returned, not DynamoDB's.
        """
        names: dict[str, str] = {"#t": "tenant"}
        values: dict[str, Any] = {":t": {"S": tenant}}
        filters = []
        if state is not None:
            names["#s"] = "state"
            values[":s"] = {"S": state.value}
            filters.append("#s = :s")
        if job_type is not None:
            names["#ty"] = "type"
            values[":ty"] = {"S": job_type}
            filters.append("#ty = :ty")
        query: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": TENANT_INDEX,
            "KeyConditionExpression": "#t = :t",
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "Limit": limit if not filters else max(limit, 100),
        }
        if filters:
            query["FilterExpression"] = " AND ".join(filters)
        start = decode_cursor(cursor, tenant) if cursor else None
        found: list[Job] = []
        for _ in range(_MAX_LIST_PAGES):
            if start:
                query["ExclusiveStartKey"] = start
            out = self._call("query", **query)
            found.extend(self._decode(item) for item in out.get("Items", []))
            start = out.get("LastEvaluatedKey")
            if len(found) >= limit or not start:
                break
        if len(found) > limit or (len(found) == limit and start):
            found = found[:limit]
            last = found[-1]
            return found, encode_cursor(tenant, {"job_id": last.job_id, "tenant": last.tenant, "created_at": last.created_at})
        return found, (encode_cursor(tenant, _plain_key(start)) if start else None)

    def active_jobs(self, state: State, due_before: str, limit: int = 100) -> Iterator[dict[str, Any]]:
        """Active jobs in ``state`` whose ``due_at`` has passed (the sweeper's view)."""
        query: dict[str, Any] = {
            "TableName": self.table_name,
            "IndexName": ACTIVE_INDEX,
            "KeyConditionExpression": "active_state = :s AND due_at <= :d",  # neither is reserved
            "ExpressionAttributeValues": {":s": {"S": state.value}, ":d": {"S": due_before}},
            "Limit": limit,
        }
        while True:
            out = self._call("query", **query)
            for item in out.get("Items", []):
                yield decode_item(item)
            if "LastEvaluatedKey" not in out:
                return
            query["ExclusiveStartKey"] = out["LastEvaluatedKey"]

    # --- transitions -------------------------------------------------------------------------

    def cancel(self, job_id: str, tenant: str) -> Job:
        """QUEUED -> CANCELLED at once; RUNNING -> cancel_requested (the runner stops it);
        a final job -> JobAlreadyFinal. Each branch is one conditional write; a race with a
        claim is retried against the state the failed write returned."""
        for _ in range(3):
            current = None
            try:
                return self._transition(
                    job_id,
                    action="cancel",
                    new_state=State.CANCELLED,
                    condition="#tenant = :tenant AND #state = :queued",
                    values={":tenant": {"S": tenant}, ":queued": {"S": State.QUEUED.value}},
                    sets={"cancel_requested": True},
                    event="cancelled",
                    detail="cancelled while queued",
                    tenant=tenant,
                )
            except InvalidTransition as exc:
                current = exc.state
                if current != State.RUNNING.value:
                    raise
            try:
                return self._update(
                    job_id,
                    action="cancel",
                    # Once: a repeated cancel writes nothing (no history entry per call).
                    condition=f"#tenant = :tenant AND #state = :running AND {_NO_CANCEL_REQUESTED}",
                    values={":tenant": {"S": tenant}, ":running": {"S": State.RUNNING.value}, ":false": {"BOOL": False}},
                    sets={"cancel_requested": True},
                    history=(State.RUNNING, "cancel_requested", None),
                    tenant=tenant,
                )
            except InvalidTransition as exc:
                if exc.state == State.RUNNING.value and exc.current and exc.current.get("cancel_requested"):
                    return Job.model_validate(exc.current)  # already requested: the job as it is
                if exc.state in (State.QUEUED.value,):
                    continue  # requeued for a retry meanwhile: cancel it as queued
                raise
        raise InvalidTransition(job_id, "cancel", current, "the job kept changing state; try again")

    def mark_dispatched(self, job_id: str, attempt: int, look_again_at: str | None = None) -> bool:
        """Record that the job's message for ``attempt`` was sent. False if the job moved on.

        ``look_again_at`` becomes the job's ``due_at`` in the active index: when the sweeper must
        next look at it (send its message again, or end its queue wait). Until then the sweeper
        does not read it, however long the backlog of waiting jobs."""
        now = iso(self.clock())
        expression = "SET dispatched_at = if_not_exists(dispatched_at, :now), updated_at = :now"
        values = {":now": {"S": now}, ":queued": {"S": State.QUEUED.value}, ":attempt": {"N": str(attempt)}}
        if look_again_at is not None:
            expression += ", due_at = :look"
            values[":look"] = {"S": look_again_at}
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=_key(job_id),
                UpdateExpression=expression,
                ConditionExpression="#state = :queued AND #attempt = :attempt",
                ExpressionAttributeNames={"#state": "state", "#attempt": "attempt"},
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if _condition_failed(exc):
                return False
            raise
        return True

    def claim(self, job_id: str, owner: str, lease_s: float, expected_attempt: int | None = None,
              *, resume_own_lease: bool = False, claim_token: str | None = None) -> Job:
        """QUEUED -> RUNNING: attempt + 1, a lease, and the job returned by the same call.

        ``expected_attempt`` (the message's) fences out a stale duplicate of an older dispatch.

        ``claim_token`` (unique to one claimant's run of one message) is recorded with the claim, so
        that a claim whose answer was lost is recognised when its claimant tries again (botocore's
        own retry, the agent's retry through the API): the job, RUNNING at the attempt this claim
        made, with this token, is returned as claimed, from the failed write's ALL_OLD (no extra
        call). Anyone else, even the same owner with another copy of the message, is refused.

        ``resume_own_lease`` (needs ``expected_attempt``) also accepts a job left RUNNING by this
        very ``owner`` in a later attempt: AWS Batch re-runs a job's container under the same Batch
        job id (and so the same owner) after a host failure, and the new container takes over.
        The takeover is a new attempt (attempt + 1), so writes of the lost container are fenced out.
        """
        now = self.clock()
        lease = iso(now + timedelta(seconds=lease_s))
        condition = "#state = :queued"
        values = {":queued": {"S": State.QUEUED.value}}
        if expected_attempt is not None:
            condition += " AND #attempt = :expected"
            values[":expected"] = {"N": str(expected_attempt)}
            if resume_own_lease:
                condition = (f"({condition}) OR (#state = :running AND lease_owner = :owner "
                             "AND #attempt > :expected)")
                values[":running"] = {"S": State.RUNNING.value}
                values[":owner"] = {"S": owner}
        elif resume_own_lease:
            raise ValueError("resume_own_lease needs expected_attempt: the takeover is fenced on it")
        sets: dict[str, Any] = {}
        if claim_token is not None:
            sets["claim_token"] = claim_token

        def claimed_by_me(current: dict[str, Any]) -> bool:
            return (claim_token is not None and current.get("claim_token") == claim_token
                    and current.get("lease_owner") == owner and current.get("state") == State.RUNNING.value
                    and (expected_attempt is None or current.get("attempt") == expected_attempt + 1))

        return self._transition(
            job_id,
            action="claim",
            new_state=State.RUNNING,
            condition=condition,
            values=values,
            sets={
                "lease_owner": owner,
                "lease_expires_at": lease,
                "started_at": iso(now),
                "heartbeat_at": iso(now),
                "active_state": State.RUNNING.value,
                "due_at": lease,
                **sets,
            },
            add_attempt=True,
            accept_current=claimed_by_me,
            event="claimed",
            detail=owner,
            history_attempt=None if (expected_attempt is None or resume_own_lease) else expected_attempt + 1,
        )

    def heartbeat(
        self, job_id: str, attempt: int, owner: str, lease_s: float, progress: Progress | None = None
    ) -> Job:
        """Extend the lease (and record progress); fenced on RUNNING and this attempt.

        The returned job carries ``cancel_requested``.
        """
        now = self.clock()
        lease = iso(now + timedelta(seconds=lease_s))
        sets: dict[str, Any] = {"lease_owner": owner, "lease_expires_at": lease, "heartbeat_at": iso(now), "due_at": lease}
        if progress is not None:
            sets["progress"] = progress.model_dump()
        return self._update(job_id, action="heartbeat", sets=sets, **self._fence(attempt))

    def set_progress(self, job_id: str, attempt: int, progress: Progress) -> Job:
        return self._update(job_id, action="progress", sets={"progress": progress.model_dump()}, **self._fence(attempt))

    def complete(self, job_id: str, attempt: int, result: Any) -> Job:
        """RUNNING -> SUCCEEDED with the result, for the current attempt only."""
        return self._transition(
            job_id,
            action="complete",
            new_state=State.SUCCEEDED,
            sets={"result": result},
            event="succeeded",
            **self._fence(attempt),
        )

    def fail(self, job_id: str, attempt: int, error: JobError, retry_delay_s: float | None) -> Job:
        """RUNNING -> QUEUED (``retry_delay_s`` given: the job is re-dispatched after the delay)
        or RUNNING -> FAILED. Fenced on the current attempt. After a cancel request -> CANCELLED
        (``_end_attempt``)."""
        return self._end_attempt(job_id, attempt, error, retry_delay_s, self._fence(attempt), action="fail",
                                 final_event="failed", retry_event="retry_scheduled")

    def expire_lease(self, job_id: str, attempt: int, error: JobError, retry_delay_s: float | None) -> Job:
        """The sweeper's write for a RUNNING job whose lease lapsed: like ``fail``, and also
        conditional on the lease still being lapsed, so a heartbeat that lands first wins."""
        fence = self._fence(attempt)
        fence["condition"] += " AND lease_expires_at < :now"
        fence["values"] = {**fence["values"], ":now": {"S": iso(self.clock())}}
        return self._end_attempt(job_id, attempt, error, retry_delay_s, fence, action="expire",
                                 final_event="lease_expired", retry_event="lease_expired")

    def _end_attempt(self, job_id: str, attempt: int, error: JobError, retry_delay_s: float | None,
                     fence: dict[str, Any], *, action: str, final_event: str, retry_event: str) -> Job:
        """End a RUNNING attempt that did not succeed: QUEUED after ``retry_delay_s``, or FAILED.

        Unless a cancel was requested: then the job ends CANCELLED, however the attempt ended (a
        failure, a timeout, a lapsed lease, an ignored request the watchdog stopped). Retrying it
        would run the job against the request, and carry the request into the new run. The write's
        condition says "no cancel requested"; when that is what failed, a second write, fenced the
        same way, records CANCELLED (with the error, which says why the attempt ended)."""
        error = bounded_error(error.model_copy(update={"attempt": attempt}))
        detail = error.message[:200]

        def write(guarded: dict[str, Any]) -> Job:
            if retry_delay_s is None:
                return self._transition(job_id, action=action, new_state=State.FAILED, sets={"error": error.model_dump()},
                                        event=final_event, detail=detail, **guarded)
            not_before = iso(self.clock() + timedelta(seconds=retry_delay_s))
            return self._transition(
                job_id, action=action, new_state=State.QUEUED,
                sets={"error": error.model_dump(), "not_before": not_before, "active_state": State.QUEUED.value,
                      "due_at": not_before},
                # dispatched_at goes: the bridge sends the retry's message (delayed) when it sees it.
                removes=("lease_owner", "lease_expires_at", "dispatched_at"),
                event=retry_event, detail=detail, **guarded,
            )

        return self._unless_cancel_requested(job_id, attempt, fence, write, action=action, error=error,
                                             why=error.type)

    def _unless_cancel_requested(self, job_id: str, attempt: int, fence: dict[str, Any],
                                 write: Callable[[dict[str, Any]], Job], *, action: str, error: JobError | None,
                                 why: str) -> Job:
        """``write`` with ``fence`` and "no cancel requested" as its condition; when that is what
        failed, CANCELLED instead, fenced the same way: an attempt that ends any other way after a
        cancel request (a failure, a lapsed lease, a release) must not run the job again against the
        request, nor carry the request into a new run."""
        guarded = {**fence, "condition": fence["condition"] + " AND " + _NO_CANCEL_REQUESTED,
                   "values": {**fence["values"], ":false": {"BOOL": False}}}
        try:
            return write(guarded)
        except InvalidTransition as exc:
            current = exc.current or {}
            if not (exc.state == State.RUNNING.value and current.get("attempt") == attempt
                    and current.get("cancel_requested")):
                raise
        sets = {"error": error.model_dump()} if error is not None else {}
        return self._transition(job_id, action=action, new_state=State.CANCELLED, sets=sets,
                                event="cancelled", detail=f"cancel requested; the attempt ended: {why}", **fence)

    def acknowledge_cancel(self, job_id: str, attempt: int, *, forced: bool = False) -> Job:
        """RUNNING -> CANCELLED once the runner stopped the job after a cancel request (``forced``:
        the job function ignored the request past the runner's grace, and was left behind)."""
        return self._transition(
            job_id, action="cancel", new_state=State.CANCELLED, event="cancelled",
            detail="forced: the job ignored the cancel request" if forced else "stopped after cancel request",
            **self._fence(attempt),
        )

    def release(self, job_id: str, attempt: int, reason: str) -> Job:
        """RUNNING -> QUEUED without spending a run: the worker holding ``attempt`` shuts down and
        hands the job back. The attempt number stays (``releases`` + 1 keeps the budget), the lease
        is cleared and ``dispatched_at`` removed, so the bridge sends a message for ``attempt`` at
        once and its claim makes attempt + 1. The fence holds: the releasing holder writes for
        ``attempt``, which is QUEUED now and, once claimed again, no longer current.

            RUNNING(a, lease L) ──release──> QUEUED(a) ──claim(message a)──> RUNNING(a + 1)
        """
        now = iso(self.clock())

        def write(guarded: dict[str, Any]) -> Job:
            return self._transition(
                job_id, action="release", new_state=State.QUEUED,
                sets={"releases": _Increment(), "active_state": State.QUEUED.value, "due_at": now},
                removes=("dispatched_at", "not_before", "lease_owner", "lease_expires_at", "heartbeat_at"),
                event="released", detail=reason[:200], **guarded,
            )

        return self._unless_cancel_requested(job_id, attempt, self._fence(attempt), write, action="release",
                                             error=None, why="released")

    def expire_queue_wait(self, job_id: str, attempt: int) -> Job:
        """QUEUED at ``attempt`` -> FAILED as QueueWaitExpired: nothing claimed the job before its
        queue-wait deadline. The deadline's passing is part of the condition, so a claim that
        lands first wins (InvalidTransition), as does a retry that queued it afresh."""
        now = self.clock()
        error = JobError(type="QueueWaitExpired", retryable=False, attempt=attempt,
                         message="no worker claimed the job before its queue-wait deadline")
        return self._transition(
            job_id, action="expire queue wait", new_state=State.FAILED,
            condition="#state = :queued AND #attempt = :attempt AND queue_deadline < :now_s",
            values={":queued": {"S": State.QUEUED.value}, ":attempt": {"N": str(attempt)},
                    ":now_s": {"N": str(int(now.timestamp()))}},
            sets={"error": error.model_dump()}, event="failed", detail=error.message, fenced_attempt=attempt,
        )

    def fail_dead_lettered(self, job_id: str, attempt: int, error: JobError) -> Job | None:
        """QUEUED at ``attempt`` -> FAILED: the message of that attempt was dead-lettered, so the
        job never ran from it. Fenced on the message's attempt and QUEUED: a stale duplicate's
        letter must not fail a job another worker runs (RUNNING, attempt + 1) or that waits for a
        later attempt's message. None when the letter is stale or the job is final."""
        try:
            return self._transition(
                job_id,
                action="fail",
                new_state=State.FAILED,
                condition="#state = :queued AND #attempt = :attempt",
                values={":queued": {"S": State.QUEUED.value}, ":attempt": {"N": str(attempt)}},
                sets={"error": bounded_error(error).model_dump()},
                event="failed",
                detail=error.message[:200],
                fenced_attempt=attempt,
            )
        except InvalidTransition:  # final (JobAlreadyFinal), claimed or moved on (StaleAttempt)
            return None

    # --- AWS Batch submissions (jobbridge.batch) ---------------------------------------------------
    #
    # One Batch job per attempt. SubmitJob is not idempotent, so the submitter first reserves the
    # attempt on the record, then submits, then records the Batch job id:
    #
    #   QUEUED, attempt a ──reserve(a, name, token)──> + batch_attempt=a ──record(token, id)──> + batch_job_id
    #        a duplicate message: BatchSubmissionReserved (with an id: nothing to do)
    #        a reservation without an id, older than any submitter can run: take_over(old token -> new)
    #   the Batch job ended and the job is still QUEUED at a: fail_unstarted_batch_attempt (attempt a+1)

    def reserve_batch_submission(self, job_id: str, attempt: int, job_name: str, token: str) -> BatchReservation:
        """Reserve the Batch submission of ``attempt``: QUEUED at that attempt and no submission for
        it yet. Also marks the job dispatched (its message evidently arrived), so the bridge does not
        send it again for this write.

        Raises BatchSubmissionReserved (with the reservation), StaleAttempt, JobAlreadyFinal,
        InvalidTransition or JobNotFound.
        """
        now = iso(self.clock())
        return self._batch_write(
            job_id, attempt,
            expression=("SET batch_attempt = :a, batch_job_name = :name, batch_token = :token, "
                        "batch_reserved_at = :now, dispatched_at = if_not_exists(dispatched_at, :now), "
                        "updated_at = :now, #version = #version + :one REMOVE batch_job_id, batch_submitted_at"),
            condition="#state = :queued AND #attempt = :a AND (attribute_not_exists(batch_attempt) OR batch_attempt <> :a)",
            values={":name": {"S": job_name}, ":token": {"S": token}, ":now": {"S": now}},
        )

    def take_over_batch_reservation(self, job_id: str, attempt: int, old_token: str, new_token: str) -> BatchReservation:
        """Take over a reservation that never got its Batch job id (its submitter died or timed
        out). Conditional on the old token, so of two redeliveries only one takes over."""
        now = iso(self.clock())
        return self._batch_write(
            job_id, attempt,
            expression="SET batch_token = :token, batch_reserved_at = :now, updated_at = :now, #version = #version + :one",
            condition=("#state = :queued AND #attempt = :a AND batch_attempt = :a AND batch_token = :old "
                       "AND attribute_not_exists(batch_job_id)"),
            values={":token": {"S": new_token}, ":old": {"S": old_token}, ":now": {"S": now}},
        )

    def record_batch_job(self, job_id: str, attempt: int, token: str, batch_job_id: str) -> bool:
        """Record the submitted Batch job's id on the reservation ``token`` holds. False when the
        reservation is no longer ours (its new holder finds the Batch job by name); JobAlreadyFinal
        when the job ended meanwhile (a cancel: the Batch job has nothing to run)."""
        now = iso(self.clock())
        condition, values = self._route_fenced(
            "#state IN (:queued, :running) AND batch_attempt = :a AND batch_token = :token "
            "AND (attribute_not_exists(batch_job_id) OR batch_job_id = :id)",
            {":id": {"S": batch_job_id}, ":now": {"S": now}, ":one": {"N": "1"}, ":a": {"N": str(attempt)},
             ":token": {"S": token}, ":queued": {"S": State.QUEUED.value}, ":running": {"S": State.RUNNING.value}},
        )
        expression = "SET batch_job_id = :id, batch_submitted_at = :now, updated_at = :now, #version = #version + :one"
        try:
            self._call(
                "update_item",
                TableName=self.table_name,
                Key=_key(job_id),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=_names_in(expression + condition),
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _condition_failed(exc):
                raise
            current = decode_item(exc.response["Item"]) if exc.response.get("Item") else {}
            if current.get("state") in {s.value for s in FINAL_STATES}:
                raise JobAlreadyFinal(job_id, "record the Batch job", current["state"], "final states are absorbing") from None
            return False
        return True

    def fail_unstarted_batch_attempt(self, job_id: str, attempt: int, job_name: str, error: JobError,
                                     retry_delay_s: float | None) -> Job:
        """The Batch job ``job_name`` (for message attempt ``attempt``) ended and its container never
        claimed the job (the image could not be pulled, the container died at start). The attempt
        counts: attempt + 1, then QUEUED after ``retry_delay_s`` (re-dispatched by the bridge) or
        FAILED. Fenced on the attempt and the reservation, so a duplicate event changes nothing."""
        error = error.model_copy(update={"attempt": attempt + 1})
        fence = {
            "condition": "#state = :queued AND #attempt = :a AND batch_attempt = :a AND batch_job_name = :name",
            "values": {":queued": {"S": State.QUEUED.value}, ":a": {"N": str(attempt)}, ":name": {"S": job_name}},
            "fenced_attempt": attempt,
        }
        if retry_delay_s is None:
            return self._transition(job_id, action="fail", new_state=State.FAILED, sets={"error": bounded_error(error).model_dump()},
                                    add_attempt=True, event="failed", detail=error.message[:200], **fence)
        not_before = iso(self.clock() + timedelta(seconds=retry_delay_s))
        return self._transition(
            job_id, action="retry", new_state=State.QUEUED,
            sets={"error": bounded_error(error).model_dump(), "not_before": not_before, "active_state": State.QUEUED.value,
                  "due_at": not_before},
            removes=("dispatched_at",),  # the bridge sends the retry's message (delayed) when it sees it
            add_attempt=True, event="retry_scheduled", detail=error.message[:200], **fence,
        )

    def _batch_write(self, job_id: str, attempt: int, *, expression: str, condition: str,
                     values: dict[str, Any]) -> BatchReservation:
        try:
            condition, values = self._route_fenced(condition, values)
            out = self._call(
                "update_item",
                TableName=self.table_name,
                Key=_key(job_id),
                UpdateExpression=expression,
                ConditionExpression=f"attribute_exists(job_id) AND ({condition})",
                ExpressionAttributeNames=_names_in(expression + condition),
                ExpressionAttributeValues={**values, ":a": {"N": str(attempt)}, ":one": {"N": "1"},
                                           ":queued": {"S": State.QUEUED.value}},
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _condition_failed(exc):
                raise
            old = exc.response.get("Item")
            current = decode_item(old) if old else None
            if (current is not None and current.get("state") == State.QUEUED.value
                    and current.get("attempt") == attempt and current.get("batch_attempt") == attempt):
                raise BatchSubmissionReserved(job_id, BatchReservation.of(current)) from None
            raise self._why(job_id, "submit to batch", old, attempt, None) from None
        return BatchReservation.of(decode_item(out["Attributes"]))

    # --- the one write path ----------------------------------------------------------------------

    @staticmethod
    def _fence(attempt: int) -> dict[str, Any]:
        return {
            "condition": "#state = :running AND #attempt = :attempt",
            "values": {":running": {"S": State.RUNNING.value}, ":attempt": {"N": str(attempt)}},
            "fenced_attempt": attempt,
        }

    def _transition(self, job_id: str, *, new_state: State, event: str, detail: str | None = None,
                    sets: dict[str, Any] | None = None, removes: tuple[str, ...] = (), **kw: Any) -> Job:
        now = self.clock()
        sets = {"state": new_state.value, **(sets or {})}
        if new_state is State.QUEUED:
            sets["queue_deadline"] = _QueueDeadline(int(now.timestamp()))
        if new_state in FINAL_STATES:
            sets["finished_at"] = iso(now)
            sets["expires_at"] = int((now + self.retention).timestamp())
            removes = (*removes, "active_state", "due_at", "lease_expires_at")
        return self._update(job_id, sets=sets, removes=removes, history=(new_state, event, detail), **kw)

    def _update(
        self,
        job_id: str,
        *,
        action: str,
        condition: str,
        values: dict[str, Any],
        sets: dict[str, Any],
        removes: tuple[str, ...] = (),
        history: tuple[State, str, str | None] | None = None,
        add_attempt: bool = False,
        fenced_attempt: int | None = None,
        history_attempt: int | None = None,
        tenant: str | None = None,
        accept_current: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Job:
        now = iso(self.clock())
        names: dict[str, str] = {}
        values = dict(values)
        parts = []
        for index, (field, value) in enumerate({**sets, "updated_at": now}.items()):
            names[f"#f{index}"] = field
            if isinstance(value, _Increment):
                values[":zero"] = {"N": "0"}
                parts.append(f"#f{index} = if_not_exists(#f{index}, :zero) + :one")
                continue
            if isinstance(value, _QueueDeadline):
                names["#qw"] = "queue_wait_s"
                values[":now_epoch"] = {"N": str(value.now_epoch)}
                values[":default_wait"] = {"N": str(DEFAULT_QUEUE_WAIT_S)}
                parts.append(f"#f{index} = :now_epoch + if_not_exists(#qw, :default_wait)")
                continue
            values[f":v{index}"] = {"S": dump_json(value)} if field == "result" else to_attr(value)
            parts.append(f"#f{index} = :v{index}")
        parts.append("#version = #version + :one")
        values[":one"] = {"N": "1"}
        if add_attempt:
            parts.append("#attempt = #attempt + :one")
        if history is not None:
            state, event, detail = history
            entry: dict[str, Any] = {"at": now, "state": state.value, "event": event}
            # The attempt the entry is about, where the writer knows it (a fenced write, or a
            # claim of the message's attempt; a Batch takeover claim does not know it).
            attempt = history_attempt if history_attempt is not None else fenced_attempt
            if attempt is not None:
                entry["attempt"] = attempt
            if detail:
                entry["detail"] = history_detail(detail)
            parts.append("#history = list_append(if_not_exists(#history, :empty), :h)")
            values[":empty"] = {"L": []}
            values[":h"] = {"L": [to_attr(entry)]}
        expression = "SET " + ", ".join(parts)
        if removes:
            expression += " REMOVE " + ", ".join(removes)
        condition, values = self._route_fenced(condition, values)
        condition = f"attribute_exists(job_id) AND ({condition})"
        # DynamoDB refuses unused placeholders, so name only those the expressions use.
        used = set(re.findall(r"#\w+", expression + " " + condition))
        names = {**_NAMES, **{k: v for k, v in names.items()}}
        names = {k: v for k, v in names.items() if k in used}
        try:
            out = self._call(
                "update_item",
                TableName=self.table_name,
                Key=_key(job_id),
                UpdateExpression=expression,
                ConditionExpression=condition,
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW",
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not _condition_failed(exc):
                raise
            old = exc.response.get("Item")
            if accept_current is not None and old and accept_current(decode_item(old)):
                return self._decode(old)  # this very change was made before (its answer was lost)
            raise self._why(job_id, action, old, fenced_attempt, tenant) from None
        item = out["Attributes"]
        if history is not None:
            item = self._trim_history(job_id, item)
        return self._decode(item)

    def _trim_history(self, job_id: str, item: dict[str, Any]) -> dict[str, Any]:
        """Keep the first history entry (the submit) and the newest ``HISTORY_KEEP_NEWEST``; count
        the entries dropped in ``history_dropped``. DynamoDB cannot append to a list and remove from
        it in one expression, so this is a second write, made only when the cap is passed, and
        conditional on the version just written (a retry or a later writer's trim cannot drop twice).
        Skipped when it fails: the next write with history trims."""
        excess = len(item.get("history", {}).get("L", [])) - 1 - HISTORY_KEEP_NEWEST
        if excess <= 0:
            return item
        try:
            out = self._call(
                "update_item",
                TableName=self.table_name,
                Key=_key(job_id),
                UpdateExpression=("SET history_dropped = if_not_exists(history_dropped, :zero) + :dropped, "
                                  "#version = #version + :one REMOVE "
                                  + ", ".join(f"#history[{index}]" for index in range(1, excess + 1))),
                ConditionExpression="#version = :seen",
                ExpressionAttributeNames={"#history": "history", "#version": "version"},
                ExpressionAttributeValues={":zero": {"N": "0"}, ":dropped": {"N": str(excess)}, ":one": {"N": "1"},
                                           ":seen": item["version"]},
                ReturnValues="ALL_NEW",
            )
        except (ClientError, DependencyUnavailable) as exc:
            log.info("history not trimmed; the next write will", extra={"job_id": job_id, "error": str(exc)})
            return item
        return out["Attributes"]

    def _why(self, job_id: str, action: str, old: dict[str, Any] | None, fenced_attempt: int | None,
             tenant: str | None) -> Exception:
        if not old:
            return JobNotFound(job_id)
        current = decode_item(old)
        if tenant is not None and current.get("tenant") != tenant:
            return JobNotFound(job_id)
        state = current.get("state")
        error: InvalidTransition
        if self.route is not None and current.get("route") != self.route.value:
            error = RouteMismatch(job_id, action, state, self.route.value, current.get("route"))
        elif state in {s.value for s in FINAL_STATES}:
            error = JobAlreadyFinal(job_id, action, state, "final states are absorbing")
        elif fenced_attempt is not None and current.get("attempt") != fenced_attempt:
            error = StaleAttempt(job_id, action, state, f"attempt {fenced_attempt} is not current ({current.get('attempt')})")
        else:
            error = InvalidTransition(job_id, action, state)
        error.current = current
        return error

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(self.client, operation)(**kwargs)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _UNAVAILABLE_CODES:
                raise DependencyUnavailable("dynamodb", code) from exc
            if code == "ValidationException" and _item_too_large(exc):
                raise ItemTooLarge(_job_id_of(kwargs), DYNAMODB_MAX_ITEM_BYTES) from exc
            if code == "ValidationException" and "ExclusiveStartKey" in kwargs:
                raise InvalidCursor() from exc
            raise
        except BotoCoreError as exc:
            raise DependencyUnavailable("dynamodb", type(exc).__name__) from exc

    def ping(self) -> None:
        """Raise DependencyUnavailable unless the table answers (the health check)."""
        self._call("describe_table", TableName=self.table_name)

    @staticmethod
    def _decode(item: dict[str, Any]) -> Job:
        return Job.model_validate(decode_item(item))


def _names_in(expressions: str) -> dict[str, str]:
    """The placeholders of ``_NAMES`` these expressions use (DynamoDB refuses unused ones)."""
    used = set(re.findall(r"#\w+", expressions))
    return {k: v for k, v in _NAMES.items() if k in used}


@dataclass(frozen=True)
class _QueueDeadline:
    """A queue-wait deadline counted from ``now_epoch`` by the record's own ``queue_wait_s``
    (``:now + if_not_exists(queue_wait_s, default)``): each time a job is queued it may wait afresh."""

    now_epoch: int


@dataclass(frozen=True)
class _Increment:
    """The value of a counter attribute that a write adds one to (``if_not_exists(x, 0) + 1``)."""


def _key(job_id: str) -> dict[str, Any]:
    return {"job_id": {"S": job_id}}


def _item_too_large(exc: ClientError) -> bool:
    """DynamoDB's refusal of an item over 400 KB. Its code, ValidationException, names many
    mistakes, so the message tells: "Item size has exceeded the maximum allowed size" (PutItem)
    or "Item size to update has exceeded the maximum allowed size" (UpdateItem)."""
    return exc.response.get("Error", {}).get("Message", "").lower().startswith("item size")


def _job_id_of(kwargs: dict[str, Any]) -> str:
    return str((kwargs.get("Key") or kwargs.get("Item") or {}).get("job_id", {}).get("S", ""))


def _condition_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _plain_key(key: dict[str, Any]) -> dict[str, str]:
    return {name: attr["S"] for name, attr in key.items()}


def encode_cursor(tenant: str, key: dict[str, str]) -> str:
    raw = json.dumps({"t": tenant, "k": key}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, tenant: str) -> dict[str, Any]:
    """The ExclusiveStartKey a cursor stands for; a cursor of another tenant or listing is invalid."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        key = data["k"]
        if data["t"] != tenant or set(key) != {"job_id", "tenant", "created_at"} or key["tenant"] != tenant:
            raise ValueError("cursor of another listing")
        return {name: {"S": str(value)} for name, value in key.items()}
    except (ValueError, KeyError, TypeError, binascii.Error, UnicodeDecodeError):
        raise InvalidCursor() from None
