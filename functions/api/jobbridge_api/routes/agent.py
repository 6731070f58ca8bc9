"""/agent: the routes an on-prem agent reports through. The state machine runs here, server
side, through the same JobLifecycle as the Lambda worker and Batch; an agent holds no DynamoDB
credentials and can touch only private jobs, only for the attempt it claimed.

    claim ─> 200 the job (params included) and a lease | 409 refused (drop the message)
    heartbeat ─> 200 {lease_owned, cancel_requested}   (lease_owned false: abandon the job)
    complete | fail | cancelled ─> 200 the job | 409 fenced out (another attempt or agent owns it)
    release ─> 200 the job, QUEUED again without spending an attempt (the agent shuts down) | 409
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool

from jobbridge.errors import InvalidTransition, JobNotFound, StaleAttempt
from jobbridge.ids import is_job_id
from jobbridge.lifecycle import JobLifecycle
from jobbridge.models import (
    AgentAttempt,
    AgentBeatAnswer,
    AgentClaim,
    AgentComplete,
    AgentFail,
    AgentHeartbeat,
    AgentJob,
    Job,
    JobPublic,
    Route,
)

from ..deps import AgentDep, SettingsDep, StoreDep, agent_lifecycle_dep
from ..problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/agent/jobs", tags=["agent"], responses={**PROBLEM_RESPONSES, 409: PROBLEM_RESPONSES[422]})
log = logging.getLogger("jobbridge.api")
LifecycleDep = Annotated[JobLifecycle, Depends(agent_lifecycle_dep)]


def _private_job(store, job_id: str) -> Job:
    """The job, if it is a private one: an agent cannot see that public jobs exist."""
    if not is_job_id(job_id):
        raise JobNotFound(job_id)
    job = store.get(job_id)
    if job.route is not Route.PRIVATE:
        raise JobNotFound(job_id)
    return job


def _owner(agent) -> str:
    return f"agent:{agent.agent_id}"


def _own_private_job(store, job_id: str, agent, action: str) -> Job:
    """The job, if this agent holds its lease: another agent, even one that knows the attempt,
    cannot extend, settle or cancel it (the write itself is fenced on the attempt)."""
    job = _private_job(store, job_id)
    if job.lease_owner is not None and job.lease_owner != _owner(agent):
        raise StaleAttempt(job_id, action, job.state.value, "the lease belongs to another agent")
    return job


@router.post("/{job_id}/claim", operation_id="claim_job", response_model=AgentJob, summary="Claim a private job for this agent")
async def claim(job_id: str, body: AgentClaim, agent: AgentDep, store: StoreDep, lifecycle: LifecycleDep,
                settings: SettingsDep) -> AgentJob:
    await run_in_threadpool(_private_job, store, job_id)
    lease = min(body.lease_s, settings.agent_lease_max_s)
    job = await run_in_threadpool(lifecycle.claim, job_id, _owner(agent), lease, body.attempt, body.claim_token)
    log.info("agent claimed", extra={"job_id": job_id, "agent_id": agent.agent_id, "attempt": job.attempt,
                                     "correlation_id": job.correlation_id})
    return AgentJob.of(job)


@router.post("/{job_id}/heartbeat", operation_id="heartbeat_job", response_model=AgentBeatAnswer, summary="Extend the lease, report progress")
async def heartbeat(job_id: str, body: AgentHeartbeat, agent: AgentDep, store: StoreDep, lifecycle: LifecycleDep,
                    settings: SettingsDep) -> AgentBeatAnswer:
    lease = min(body.lease_s, settings.agent_lease_max_s)
    try:
        await run_in_threadpool(_own_private_job, store, job_id, agent, "heartbeat")
        job = await run_in_threadpool(lifecycle.heartbeat, job_id, body.attempt, _owner(agent), lease, body.progress)
    except (StaleAttempt, InvalidTransition) as exc:
        log.info("heartbeat fenced", extra={"job_id": job_id, "agent_id": agent.agent_id, "reason": str(exc)})
        return AgentBeatAnswer(lease_owned=False, cancel_requested=False, state=exc.state)
    return AgentBeatAnswer(lease_owned=True, cancel_requested=job.cancel_requested,
                           lease_expires_at=job.lease_expires_at, state=job.state)


@router.post("/{job_id}/complete", operation_id="complete_job", response_model=JobPublic, summary="Report the result")
async def complete(job_id: str, body: AgentComplete, agent: AgentDep, store: StoreDep,
                   lifecycle: LifecycleDep) -> JobPublic:
    await run_in_threadpool(_own_private_job, store, job_id, agent, "complete")
    job = await run_in_threadpool(lifecycle.complete, job_id, body.attempt, body.result)
    return JobPublic.of(job)


@router.post("/{job_id}/fail", operation_id="fail_job", response_model=JobPublic, summary="Report a failure (retried per the job type's policy)")
async def fail(job_id: str, body: AgentFail, agent: AgentDep, store: StoreDep, lifecycle: LifecycleDep) -> JobPublic:
    job = await run_in_threadpool(_own_private_job, store, job_id, agent, "fail")
    settled = await run_in_threadpool(lifecycle.fail, job_id, body.attempt, body.error, job.attempt_budget, job.type)
    return JobPublic.of(settled)


@router.post("/{job_id}/release", operation_id="release_job", response_model=JobPublic,
             summary="Hand the job back unfinished (the agent shuts down): QUEUED again, no attempt spent")
async def release(job_id: str, body: AgentAttempt, agent: AgentDep, store: StoreDep,
                  lifecycle: LifecycleDep) -> JobPublic:
    await run_in_threadpool(_own_private_job, store, job_id, agent, "release")
    job = await run_in_threadpool(lifecycle.release, job_id, body.attempt, f"{_owner(agent)} shut down")
    log.info("agent released", extra={"job_id": job_id, "agent_id": agent.agent_id, "attempt": body.attempt})
    return JobPublic.of(job)


@router.post("/{job_id}/cancelled", operation_id="acknowledge_cancel", response_model=JobPublic, summary="Acknowledge a cancel: the job stopped")
async def cancelled(job_id: str, body: AgentAttempt, agent: AgentDep, store: StoreDep,
                    lifecycle: LifecycleDep) -> JobPublic:
    await run_in_threadpool(_own_private_job, store, job_id, agent, "cancel")
    job = await run_in_threadpool(lifecycle.acknowledge_cancel, job_id, body.attempt)
    return JobPublic.of(job)
