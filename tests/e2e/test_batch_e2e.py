"""The Batch route end to end on the `make run` stack (a subprocess), driven over HTTP: the API, the
stream and the bridge, the public-batch queue's poller and batch_submit, the local Batch running the
container as a process (the same runner, against moto server), and batch_events fed by the local
Batch's state change events.

Faults are injected where AWS would produce them, in the local Batch (POST /_local/jobs/{id}/fail):
a reclaimed Spot host, a container killed for memory.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import httpx
import pytest

from e2e_stack import RunningStack, start_stack, wait_for
from jobbridge_local.local_batch import DEFAULT_MAX_RUNNING

pytestmark = pytest.mark.e2e

HOST_RECLAIMED = "Host EC2 (instance i-0e2e0e2e0e2e0e2e0) terminated."
OOM = "OutOfMemoryError: Container killed due to memory usage"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("batch-stack"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def batch(stack: RunningStack) -> Any:
    url = stack.info.get("batch_endpoint_url")
    assert url, "the stack runs no local Batch: stack.json has no batch_endpoint_url"
    import boto3

    return boto3.client("batch", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture
def api(stack: RunningStack) -> Iterator[httpx.Client]:
    with stack.client("acme") as client:
        yield client


def queue_arn(batch: Any, logical_id: str) -> str:
    return next(q["jobQueueArn"] for q in batch.describe_job_queues()["jobQueues"]
                if q["jobQueueName"].endswith(logical_id))


def batch_jobs_of(batch: Any, job_id: str, attempt_number: int) -> list[dict[str, Any]]:
    """The Batch jobs named for one attempt of a jobbridge job, on either queue."""
    name = f"jb-{job_id}-{attempt_number}"
    found: list[dict[str, Any]] = []
    for logical_id in ("CpuJobQueue", "GpuJobQueue"):
        found += batch.list_jobs(jobQueue=queue_arn(batch, logical_id),
                                 filters=[{"name": "JOB_NAME", "values": [name]}])["jobSummaryList"]
    return found


def submit_8k(api: httpx.Client, video_id: str, duration_s: float) -> str:
    response = api.post("/jobs", json={"type": "transcode",
                                       "params": {"video_id": video_id, "resolution": "8K", "duration_s": duration_s}})
    assert response.status_code == 202, response.text
    assert response.json()["route"] == "batch"
    return response.json()["job_id"]


def job(api: httpx.Client, job_id: str) -> dict[str, Any]:
    return api.get(f"/jobs/{job_id}").json()


def claimed_by(stack: RunningStack, job_id: str) -> list[str | None]:
    """Which containers claimed the job, from its record: tenants see only "batch" (JobPublic)."""
    from jobbridge.store import JobStore

    record = JobStore(stack.info["table"], client=stack.aws("dynamodb")).get(job_id)
    return [entry.detail for entry in record.history if entry.event == "claimed"]


def running_in_batch(stack: RunningStack, api: httpx.Client, batch: Any, job_id: str, attempt: int,
                     batch_attempt_number: int) -> str:
    """Wait until the container of Batch job jb-{job_id}-{n} runs jobbridge attempt ``attempt``;
    returns the Batch job id."""
    def claimed() -> str | None:
        jobs = batch_jobs_of(batch, job_id, batch_attempt_number)
        current = job(api, job_id)
        claims = claimed_by(stack, job_id)
        if (jobs and current["state"] == "RUNNING" and current["attempt"] == attempt
                and claims[-1] == f"batch:{jobs[0]['jobId']}"):
            return jobs[0]["jobId"]
        return None

    return wait_for(claimed, timeout=60, what=f"attempt {attempt} of {job_id} running in Batch")


def inject(stack: RunningStack, batch_job_id: str, **outcome: Any) -> None:
    response = httpx.post(f"{stack.info['batch_endpoint_url']}/_local/jobs/{batch_job_id}/fail", json=outcome)
    assert response.status_code == 200, response.text


def test_an_8k_transcode_runs_in_batch_on_the_gpu_queue_and_succeeds(stack, api, batch) -> None:
    job_id = submit_8k(api, "e2e-8k", duration_s=1)

    final = wait_for(lambda: (j := job(api, job_id))["state"] in ("SUCCEEDED", "FAILED") and j, timeout=90,
                     what="the transcode to finish")

    assert final["state"] == "SUCCEEDED", final
    assert final["result"] == {"video_id": "e2e-8k", "rendition": "8K", "output": "renditions/e2e-8k/8K.mp4"}
    (summary,) = batch_jobs_of(batch, job_id, 1)
    # The job settles before its container process has exited: Batch's status follows.
    detail = wait_for(lambda: (d := batch.describe_jobs(jobs=[summary["jobId"]])["jobs"][0])["status"] in (
        "SUCCEEDED", "FAILED") and d, timeout=30, what="the container to exit")
    assert detail["status"] == "SUCCEEDED"
    assert detail["jobQueue"] == queue_arn(batch, "GpuJobQueue")
    assert {"type": "GPU", "value": "1"} in detail["container"]["resourceRequirements"]
    assert [h["detail"] for h in final["history"] if h["event"] == "claimed"] == ["batch"]  # the tenant's view
    assert claimed_by(stack, job_id) == [f"batch:{summary['jobId']}"]


def test_a_container_killed_for_memory_fails_the_job_with_batchs_reason(stack, api, batch) -> None:
    job_id = submit_8k(api, "e2e-oom", duration_s=600)
    batch_job_id = running_in_batch(stack, api, batch, job_id, attempt=1, batch_attempt_number=1)

    inject(stack, batch_job_id, statusReason="Essential container in task exited", reason=OOM, exitCode=137)

    final = wait_for(lambda: (j := job(api, job_id))["state"] == "FAILED" and j, timeout=60,
                     what="batch_events to fail the job")
    assert final["error"]["type"] == "BatchOutOfMemory"
    assert OOM in final["error"]["message"] and "exit code 137" in final["error"]["message"]
    assert final["attempt"] == 1
    (detail,) = batch.describe_jobs(jobs=[batch_job_id])["jobs"]  # FAILED first: it sent the event
    assert detail["status"] == "FAILED" and len(detail["attempts"]) == 1  # OOM: Batch does not retry it


def test_a_reclaimed_host_is_retried_by_batch_then_by_jobbridge(stack, api, batch) -> None:
    job_id = submit_8k(api, "e2e-spot", duration_s=600)
    first = running_in_batch(stack, api, batch, job_id, attempt=1, batch_attempt_number=1)

    # Batch's retry strategy re-runs the container on a new host; it takes the job over (attempt 2).
    inject(stack, first, statusReason=HOST_RECLAIMED)
    assert running_in_batch(stack, api, batch, job_id, attempt=2, batch_attempt_number=1) == first
    # Reclaimed again: Batch's attempts are spent, the job FAILs in Batch, and batch_events
    # requeues it; the bridge dispatches attempt 2's message and a new Batch job runs attempt 3.
    inject(stack, first, statusReason=HOST_RECLAIMED)
    second = running_in_batch(stack, api, batch, job_id, attempt=3, batch_attempt_number=3)

    current = job(api, job_id)
    assert second != first
    assert current["error"]["type"] == "BatchHostTerminated" and HOST_RECLAIMED in current["error"]["message"]
    events = [h["event"] for h in current["history"]]
    assert events.count("claimed") == 3 and "retry_scheduled" in events
    (detail,) = batch.describe_jobs(jobs=[first])["jobs"]
    assert detail["status"] == "FAILED" and len(detail["attempts"]) == 2
    inject(stack, second, statusReason="Essential container in task exited", reason=OOM, exitCode=137)  # end it


def test_duplicate_batch_submit_messages_start_one_batch_job(stack, api, batch) -> None:
    job_id = submit_8k(api, "e2e-dup", duration_s=2)
    sqs = stack.aws("sqs")
    url = stack.queue_url("PublicBatchQueue")
    body = json.dumps({"job_id": job_id, "route": "batch", "attempt": 0, "correlation_id": None, "timeout_s": 14400})
    for _ in range(3):  # on top of the bridge's own message: four deliveries of attempt 0
        sqs.send_message(QueueUrl=url, MessageBody=body)

    final = wait_for(lambda: (j := job(api, job_id))["state"] in ("SUCCEEDED", "FAILED") and j, timeout=90,
                     what="the transcode to finish")
    wait_for(lambda: sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])
             ["Attributes"]["ApproximateNumberOfMessages"] == "0", timeout=60, what="the duplicates to be consumed")

    assert final["state"] == "SUCCEEDED" and final["attempt"] == 1
    assert len(batch_jobs_of(batch, job_id, 1)) == 1
    assert batch_jobs_of(batch, job_id, 2) == []


def test_cancel_stops_batch_work_waiting_for_a_host_and_running(stack, api, batch) -> None:
    # Every local "host" busy (the local Batch runs DEFAULT_MAX_RUNNING containers at once): the next
    # Batch job waits RUNNABLE, as one waits for a GPU instance in AWS.
    busy = [submit_8k(api, f"e2e-busy-{n}", duration_s=600) for n in range(DEFAULT_MAX_RUNNING)]
    running = [running_in_batch(stack, api, batch, job_id, attempt=1, batch_attempt_number=1) for job_id in busy]
    job_id = submit_8k(api, "e2e-cancel-waiting", duration_s=1)
    waiting = wait_for(lambda: job(api, job_id).get("dispatched_at") and batch_jobs_of(batch, job_id, 1),
                       timeout=60, what="its Batch job to be submitted")[0]
    assert waiting["status"] == "RUNNABLE"

    cancelled = api.post(f"/jobs/{job_id}/cancel")

    assert cancelled.status_code == 200 and cancelled.json()["state"] == "CANCELLED"
    # the bridge, from the stream, terminates the Batch job: no host starts for it
    detail = wait_for(lambda: (d := batch.describe_jobs(jobs=[waiting["jobId"]])["jobs"][0])["status"] == "FAILED"
                      and d, timeout=60, what="the waiting Batch job to be terminated")
    assert f"jobbridge job {job_id} cancelled" in detail["statusReason"]
    assert not detail.get("attempts")  # never started

    # running ones: cancelled, they end CANCELLED and their containers stop
    for busy_id in busy:
        assert api.post(f"/jobs/{busy_id}/cancel").json()["cancel_requested"] is True
    for busy_id, batch_job_id in zip(busy, running):
        assert wait_for(lambda: job(api, busy_id)["state"] != "RUNNING", timeout=90,
                        what="the running job to stop") and job(api, busy_id)["state"] == "CANCELLED"
        wait_for(lambda: batch.describe_jobs(jobs=[batch_job_id])["jobs"][0]["status"] in ("SUCCEEDED", "FAILED"),
                 timeout=60, what="its container to stop")
    assert job(api, job_id)["state"] == "CANCELLED"
