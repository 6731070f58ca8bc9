"""/jobs: submit, read, list and cancel a tenant's jobs."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from jobbridge.errors import JobBridgeError, JobNotFound
from jobbridge.ids import is_idempotency_key, is_job_id
from jobbridge.models import JobAccepted, JobCreate, JobPage, JobPublic, JobSummary, State
from jobbridge.service import JobService, job_request

from ..deps import CorrelationDep, PrincipalDep, ServiceDep, StoreDep
from ..problems import PROBLEM_RESPONSES, Problem, domain_problem

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
    responses={200: {"model": JobPublic, "description": "A hot job type ran in the request: the job as it ended"},
               409: PROBLEM_RESPONSES[422] | {"description": "Idempotency-Key reused with another body"}},
    summary="Submit a job",
    operation_id="submit_job",
    openapi_extra={"responses": {"202": {"links": _JOB_LINKS}}},
)
async def submit_job(
    body: JobCreate,
    principal: PrincipalDep,
    service: ServiceDep,
    response: Response,
    correlation: CorrelationDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)] = None,
) -> JobAccepted | JSONResponse:
    """Validate, choose the route and record the job (one conditional write). The job's
    message is sent by the bridge from the table's stream, never from here. A hot job type runs
    here, within its budget, and is recorded final: 200 with the job (jobbridge.inline)."""
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
    if submitted.ran_inline:
        replayed = {} if submitted.created else {"Idempotent-Replayed": "true"}
        return JSONResponse(JobPublic.of(job).model_dump(mode="json"), headers={"Location": location, **replayed})
    return JobAccepted(job_id=job.job_id, state=job.state, route=job.route, created_at=job.created_at, location=location)


# A bulk submit: up to this many jobs in one request, so that a client submitting thousands pays
# API Gateway (and a Lambda invocation) per request, not per job. Each job is still its own
# conditional PutItem (BatchWriteItem takes no conditions, and the condition is what makes an
# Idempotency-Key safe); 25 of them fit well inside API Gateway's 30 s.
MAX_BATCH_JOBS = 25


class JobBatch(BaseModel):
    """The body of ``POST /jobs:batch``: each item is a ``JobCreate`` body, plus its own
    ``idempotency_key`` (the header of a single submit). An item that is not valid is refused on
    its own; the others are still submitted."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"jobs": [
        {"type": "transcode", "params": {"video_id": "v1", "resolution": "8K"}, "idempotency_key": "v1-8k"},
        {"type": "echo", "params": {"n": 2}}]}]})

    jobs: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_BATCH_JOBS,
                                       description="JobCreate bodies, each with an optional idempotency_key")


class JobBatchResult(BaseModel):
    """One item's outcome, in the order sent: ``status`` 202 accepted, 200 replayed (its key made
    the job before), else the item's problem (422, 409, 413, 503: worth retrying)."""

    index: int
    status: int
    job: JobAccepted | None = None
    problem: Problem | None = None


class JobBatchAnswer(BaseModel):
    results: list[JobBatchResult]


@router.post(":batch", response_model=JobBatchAnswer, summary="Submit up to 25 jobs, one result each",
             operation_id="submit_jobs_batch")
async def submit_jobs_batch(body: JobBatch, principal: PrincipalDep, service: ServiceDep,
                            correlation: CorrelationDep) -> JobBatchAnswer:
    """Each item as ``POST /jobs`` would treat it (validation, routing, one conditional write); one
    result per item. Retry the items whose status is 503 with the same idempotency_key."""
    results = await run_in_threadpool(_submit_each, service, principal.tenant, body.jobs, correlation)
    log.info("batch submitted", extra={"tenant": principal.tenant, "jobs": len(results), "correlation_id": correlation,
                                       "accepted": sum(r.status == 202 for r in results)})
    return JobBatchAnswer(results=results)


def _submit_each(service: JobService, tenant: str, items: list[dict[str, Any]],
                 correlation: str | None) -> list[JobBatchResult]:
    results = []
    for index, item in enumerate(items):
        try:
            fields = dict(item)
            key = fields.pop("idempotency_key", None)
            request, key = job_request(fields, key)
            submitted = service.submit(tenant, request, idempotency_key=key, correlation_id=correlation)
        except JobBridgeError as exc:
            problem = domain_problem(exc, correlation)
            results.append(JobBatchResult(index=index, status=problem.status, problem=problem))
            continue
        job = submitted.job
        accepted = JobAccepted(job_id=job.job_id, state=job.state, route=job.route, created_at=job.created_at,
                               location=f"/jobs/{job.job_id}")
        results.append(JobBatchResult(index=index, status=202 if submitted.created else 200, job=accepted))
    return results


@router.get("", response_model=JobPage, summary="List the caller's jobs, newest first", operation_id="list_jobs")
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
