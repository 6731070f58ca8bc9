"""/jobs: submit, read, list and cancel a tenant's jobs."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Header, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool

from jobbridge.errors import JobNotFound
from jobbridge.ids import is_idempotency_key, is_job_id
from jobbridge.models import JobAccepted, JobCreate, JobPage, JobPublic, JobSummary, State

from ..deps import CorrelationDep, PrincipalDep, ServiceDep, StoreDep
from ..problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/jobs", tags=["jobs"], responses=PROBLEM_RESPONSES)
log = logging.getLogger("jobbridge.api")

# OpenAPI links: what a client (and a stateful fuzzer) can do next with the id a submit returns.
# https://spec.openapis.org/oas/v3.1.0#link-object
_JOB_LINKS = {
    "GetJob": {"operationId": "get_job", "parameters": {"job_id": "$response.body#/job_id"}},
    "CancelJob": {"operationId": "cancel_job", "parameters": {"job_id": "$response.body#/job_id"}},
}


@router.post(
    "",
    status_code=202,
    response_model=JobAccepted,
    responses={409: PROBLEM_RESPONSES[422] | {"description": "Idempotency-Key reused with another body"}},
    summary="Submit a job",
    openapi_extra={"responses": {"202": {"links": _JOB_LINKS}}},
)
async def submit_job(
    body: JobCreate,
    principal: PrincipalDep,
    service: ServiceDep,
    response: Response,
    correlation: CorrelationDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> JobAccepted:
    """Validate, choose the route and record the job (one conditional write). The job's
    message is sent by the bridge from the table's stream, never from here."""
    if idempotency_key is not None and not is_idempotency_key(idempotency_key):
        raise HTTPException(422, "Idempotency-Key must be 1-255 printable ASCII characters without spaces")
    submitted = await run_in_threadpool(
        service.submit, principal.tenant, body, idempotency_key=idempotency_key, correlation_id=correlation
    )
    job = submitted.job
    location = f"/jobs/{job.job_id}"
    response.headers["Location"] = location
    if not submitted.created:
        response.headers["Idempotent-Replayed"] = "true"
    log.info("job accepted" if submitted.created else "idempotent replay",
             extra={"job_id": job.job_id, "tenant": principal.tenant, "type": job.type, "route": job.route.value,
                    "correlation_id": correlation})
    return JobAccepted(job_id=job.job_id, state=job.state, route=job.route, created_at=job.created_at, location=location)


@router.get("", response_model=JobPage, summary="List the caller's jobs, newest first")
async def list_jobs(
    principal: PrincipalDep,
    store: StoreDep,
    state: State | None = None,
    type: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(min_length=1, max_length=2048)] = None,
) -> JobPage:
    jobs, next_cursor = await run_in_threadpool(
        store.list_jobs, principal.tenant, state=state, job_type=type, limit=limit, cursor=cursor
    )
    return JobPage(items=[JobSummary.of(j) for j in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic, summary="Read a job: state, progress, result, history",
            operation_id="get_job")
async def get_job(job_id: str, principal: PrincipalDep, store: StoreDep) -> JobPublic:
    if not is_job_id(job_id):
        raise JobNotFound(job_id)
    job = await run_in_threadpool(store.get, job_id, principal.tenant)
    return JobPublic.of(job)


@router.post(
    "/{job_id}/cancel",
    response_model=JobPublic,
    responses={409: PROBLEM_RESPONSES[422] | {"description": "The job is already final"}},
    summary="Cancel a job: at once if queued, cooperatively if running",
    operation_id="cancel_job",
)
async def cancel_job(job_id: str, principal: PrincipalDep, store: StoreDep, correlation: CorrelationDep) -> JobPublic:
    if not is_job_id(job_id):
        raise JobNotFound(job_id)
    job = await run_in_threadpool(store.cancel, job_id, principal.tenant)
    log.info("cancel", extra={"job_id": job_id, "state": job.state.value, "cancel_requested": job.cancel_requested,
                              "correlation_id": correlation})
    return JobPublic.of(job)
