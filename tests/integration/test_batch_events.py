"""functions/batch_events/app.py's handler in this process against moto server, fed
events/batch_state_change_*.json for jobs in the table; and once fed by the local Batch itself, whose
container (a real ``python -m jobbridge.batch_entrypoint`` process) is killed before it reports."""

from __future__ import annotations

from functools import lru_cache

import copy
from typing import Any, Callable

import boto3
import pytest

from jobbridge_local.template import load_template
from events import load_event
from jobbridge.batch import batch_job_name, batch_owner
from jobbridge.models import JobCreate, State
from jobbridge.registry import load_registry
from jobbridge.service import JobService
from jobbridge_local.invoke import LambdaContext, load_handler, local_aws_environment
from jobbridge_local.local_batch import LocalBatch
from jobbridge_local.resources import DUMMY_CREDENTIALS
from timing import wait_for

# One parse of template.yaml per module (not imported from conftest: module names must stay unique).
template = lru_cache(maxsize=1)(load_template)

pytestmark = pytest.mark.integration


@pytest.fixture
def events_function(function_env, module_stack) -> Callable[[dict[str, Any]], dict[str, Any]]:
    spec = function_env("BatchEventsFunction", module_stack)
    handler = load_handler("BatchEventsFunction", template())
    return lambda event: handler(event, LambdaContext(spec))


@pytest.fixture
def store(module_stack, stack_store):
    return stack_store(module_stack)


@pytest.fixture
def service(store) -> JobService:
    return JobService(store, load_registry())


def transcode_8k(service: JobService, **params: Any):
    return service.submit("acme", JobCreate(type="transcode", params={"video_id": "v", "resolution": "8K", **params})).job


def state_change(name: str, job, batch_job_id: str, expected_attempt: int = 0) -> dict[str, Any]:
    event = load_event(name)
    detail = event["detail"]
    detail["jobId"] = batch_job_id
    detail["jobName"] = batch_job_name(job.job_id, expected_attempt)
    for entry in detail["container"]["environment"]:
        if entry["name"] == "JOBBRIDGE_JOB_ID":
            entry["value"] = job.job_id
    return event


def test_an_out_of_memory_container_fails_its_job_with_batchs_reason(events_function, service, store) -> None:
    job = transcode_8k(service)
    store.claim(job.job_id, batch_owner("b-oom-1"), 60, 0)

    response = events_function(state_change("batch_state_change_failed", job, "b-oom-1"))

    assert response["outcome"] == "failed"
    failed = store.get(job.job_id)
    assert failed.state is State.FAILED
    assert failed.error.type == "BatchOutOfMemory"
    assert "OutOfMemoryError: Container killed due to memory usage" in failed.error.message


def test_a_reclaimed_spot_host_requeues_the_job_and_a_duplicate_event_changes_nothing(events_function, service,
                                                                                     store) -> None:
    job = transcode_8k(service)
    store.claim(job.job_id, batch_owner("b-spot-1"), 60, 0)
    event = state_change("batch_state_change_failed", job, "b-spot-1")
    event["detail"]["statusReason"] = "Host EC2 (instance i-0fedcba9876543210) terminated."
    event["detail"]["attempts"][0]["statusReason"] = event["detail"]["statusReason"]
    for holder in (event["detail"]["container"], event["detail"]["attempts"][0]["container"]):
        holder.pop("reason")
        holder.pop("exitCode")

    first = events_function(event)
    requeued = store.get(job.job_id)
    second = events_function(copy.deepcopy(event))

    assert first["outcome"] == "retry_scheduled"
    assert (requeued.state, requeued.attempt) == (State.QUEUED, 1)
    assert "Host EC2 (instance i-0fedcba9876543210) terminated." in requeued.error.message
    assert second["outcome"] == "stale"
    assert store.get(job.job_id).version == requeued.version


def test_a_succeeded_event_for_a_job_the_container_settled_changes_nothing(events_function, service, store) -> None:
    job = transcode_8k(service)
    store.claim(job.job_id, batch_owner("b-ok-1"), 60, 0)
    done = store.complete(job.job_id, 1, {"output": "renditions/v/8K.mp4"})

    response = events_function(state_change("batch_state_change_succeeded", job, "b-ok-1"))

    assert response["outcome"] == "settled"
    assert store.get(job.job_id).version == done.version


def test_a_container_killed_before_reporting_is_retried_from_the_local_batch_event(
        monkeypatch, function_env, module_stack, moto_server, service, store) -> None:
    # The whole Batch leg in one process: batch_submit's handler submits to the local Batch, whose
    # container claims the job against moto server; the container is then killed (a Spot host
    # reclaimed twice, so Batch's own retry runs out) and the FAILED event reaches batch_events.
    spec = function_env("BatchEventsFunction", module_stack)
    events_handler = load_handler("BatchEventsFunction", template())
    statuses: list[str] = []

    def deliver(event: dict[str, Any]) -> None:
        statuses.append(event["detail"]["status"])
        if event["detail"]["status"] in ("SUCCEEDED", "FAILED"):
            events_handler(event, LambdaContext(spec))

    batch = LocalBatch(template(), module_stack.context, aws_env=local_aws_environment(moto_server.endpoint_url),
                       deliver=deliver, python_path=[str(template().base_dir / "layers" / "core")])
    batch.start()
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL_BATCH", batch.endpoint_url)
        job = transcode_8k(service, duration_s=600)  # long enough to be killed mid-way
        submit_spec = function_env("BatchSubmitFunction", module_stack)
        submit = load_handler("BatchSubmitFunction", template())
        event = load_event("sqs_batch_submit")
        event["Records"][0]["body"] = (f'{{"job_id":"{job.job_id}","route":"batch","attempt":0,'
                                       f'"correlation_id":null,"timeout_s":{job.timeout_s}}}')
        assert submit(event, LambdaContext(submit_spec)) == {"batchItemFailures": []}
        (batch_job_id,) = [j.job_id for j in batch.jobs.values() if j.job_name == batch_job_name(job.job_id, 0)]
        api = boto3.client("batch", endpoint_url=batch.endpoint_url, region_name="us-east-1", **DUMMY_CREDENTIALS)

        for expected_attempt in (1, 2):  # the first container, then Batch's retry taking the job over
            wait_for(lambda: store.get(job.job_id).attempt == expected_attempt and
                     store.get(job.job_id).state is State.RUNNING, timeout=60, what=f"container {expected_attempt} claimed the job")
            assert store.get(job.job_id).lease_owner == batch_owner(batch_job_id)
            batch.fail_job(batch_job_id, {"statusReason": "Host EC2 (instance i-0123456789abcdef0) terminated."})

        wait_for(lambda: store.get(job.job_id).state is State.QUEUED, timeout=60, what="the FAILED event settled the job")
        (detail,) = api.describe_jobs(jobs=[batch_job_id])["jobs"]
    finally:
        batch.close()

    assert detail["status"] == "FAILED" and len(detail["attempts"]) == 2
    requeued = store.get(job.job_id)
    assert requeued.attempt == 2 and requeued.error.type == "BatchHostTerminated"
    assert "Host EC2 (instance i-0123456789abcdef0) terminated." in requeued.error.message
    assert statuses.count("RUNNING") == 2 and statuses[-1] == "FAILED"

