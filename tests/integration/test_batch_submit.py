"""functions/batch_submit/app.py's handler in this process, with events/sqs_batch_submit.json, against
moto server (the table and queues of template.yaml) and the local Batch API (jobbridge_local.local_batch,
reached through AWS_ENDPOINT_URL_BATCH as the local stack sets it). Containers are not started here:
the Batch jobs stay RUNNABLE for the test to read back over the Batch API."""

from __future__ import annotations

from functools import lru_cache

import dataclasses
import json
from typing import Any, Iterator

import boto3
import pytest

from jobbridge_local.template import load_template
from events import load_event, stream_event
from jobbridge.models import JobCreate, Route, State
from jobbridge.registry import load_registry
from jobbridge.service import JobService
from jobbridge_local.invoke import LambdaContext, load_handler
from jobbridge_local.local_batch import LocalBatch
from jobbridge_local.event_filter import matches_any, parse_filters
from jobbridge_local.resources import DUMMY_CREDENTIALS
from jobbridge_local.stream_poller import to_lambda_record
from jobbridge_local.template import LOCAL_REGION

# One parse of template.yaml per module (not imported from conftest: module names must stay unique).
template = lru_cache(maxsize=1)(load_template)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def local_batch(module_stack) -> Iterator[LocalBatch]:
    batch = LocalBatch(template(), module_stack.context, aws_env={}, run_containers=False)
    batch.start()
    yield batch
    batch.close()


@pytest.fixture
def batch_api(local_batch) -> Any:
    return boto3.client("batch", endpoint_url=local_batch.endpoint_url, region_name="us-east-1", **DUMMY_CREDENTIALS)


@pytest.fixture
def submit_function(monkeypatch, function_env, module_stack, local_batch):
    """The handler and its function's spec, with the environment template.yaml gives it."""

    def prepare(**overrides: str):
        monkeypatch.setenv("AWS_ENDPOINT_URL_BATCH", local_batch.endpoint_url)
        spec = function_env("BatchSubmitFunction", module_stack, **overrides)
        handler = load_handler("BatchSubmitFunction", template())
        return spec, lambda event: handler(event, LambdaContext(spec))

    return prepare


@pytest.fixture
def service(module_stack, stack_store) -> JobService:
    return JobService(stack_store(module_stack), load_registry())


def delivered(module_stack, body: dict[str, Any]) -> dict[str, Any]:
    """events/sqs_batch_submit.json carrying ``body``, with the receipt handle of a real message."""
    sqs = module_stack.client("sqs")
    url = module_stack.queue_url(Route.BATCH)
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    (message,) = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, WaitTimeSeconds=1)["Messages"]
    event = load_event("sqs_batch_submit")
    record = event["Records"][0]
    record["body"] = message["Body"]
    record["receiptHandle"] = message["ReceiptHandle"]
    record["messageId"] = message["MessageId"]
    return event


def message_of(job, attempt: int = 0) -> dict[str, Any]:
    return {"job_id": job.job_id, "route": "batch", "attempt": attempt, "correlation_id": job.correlation_id,
            "timeout_s": job.timeout_s, "expected_runtime_s": None}


def jobs_named(batch_api, local_batch, name: str) -> list[dict[str, Any]]:
    found = []
    for queue_arn in local_batch.queues:
        found += batch_api.list_jobs(jobQueue=queue_arn, filters=[{"name": "JOB_NAME", "values": [name]}])["jobSummaryList"]
    return found


def gpu_queue(local_batch) -> str:
    return next(arn for arn, q in local_batch.queues.items() if q.logical_id == "GpuJobQueue")


def test_an_8k_transcode_becomes_one_batch_job_on_the_gpu_queue(submit_function, service, module_stack, batch_api,
                                                                 local_batch, stack_store) -> None:
    _, invoke = submit_function()
    job = service.submit("acme", JobCreate(type="transcode", params={"video_id": "v8k", "resolution": "8K"}),
                         correlation_id="corr-8k").job
    assert job.route is Route.BATCH and job.requirements.gpu

    response = invoke(delivered(module_stack, message_of(job)))

    assert response == {"batchItemFailures": []}
    (summary,) = jobs_named(batch_api, local_batch, f"jb-{job.job_id}-1")
    (detail,) = batch_api.describe_jobs(jobs=[summary["jobId"]])["jobs"]
    assert detail["jobQueue"] == gpu_queue(local_batch)
    assert detail["jobDefinition"].endswith(f":job-definition/{module_stack.name}-gpu:1")
    env = {e["name"]: e["value"] for e in detail["container"]["environment"]}
    assert (env["JOBBRIDGE_JOB_ID"], env["JOBBRIDGE_EXPECTED_ATTEMPT"], env["JOBBRIDGE_CORRELATION_ID"]) == (
        job.job_id, "0", "corr-8k")
    assert env["JOBBRIDGE_TABLE_NAME"] == module_stack.table_name  # from the job definition
    assert detail["timeout"]["attemptDurationSeconds"] == job.timeout_s + 120
    item = module_stack.client("dynamodb").get_item(TableName=module_stack.table_name,
                                                    Key={"job_id": {"S": job.job_id}}, ConsistentRead=True)["Item"]
    assert item["batch_job_id"] == {"S": summary["jobId"]}
    assert stack_store(module_stack).get(job.job_id).state is State.QUEUED  # the container claims it


def test_a_duplicate_message_starts_one_batch_job(submit_function, service, module_stack, batch_api,
                                                 local_batch) -> None:
    _, invoke = submit_function()
    job = service.submit("acme", JobCreate(type="transcode", params={"video_id": "dup", "hdr": True})).job
    event = delivered(module_stack, message_of(job))
    twice_in_one_batch = {"Records": [event["Records"][0], {**event["Records"][0], "messageId": "copy"}]}

    first = invoke(event)
    second = invoke(twice_in_one_batch)

    assert first == second == {"batchItemFailures": []}
    assert len(jobs_named(batch_api, local_batch, f"jb-{job.job_id}-1")) == 1


def test_a_stale_message_is_acknowledged_without_a_batch_job(submit_function, service, module_stack, batch_api,
                                                            local_batch, stack_store) -> None:
    _, invoke = submit_function()
    job = service.submit("acme", JobCreate(type="sleep", params={"seconds": 1200}, target="public")).job
    stack_store(module_stack).claim(job.job_id, "batch:elsewhere", 60, 0)

    response = invoke(delivered(module_stack, message_of(job)))

    assert response == {"batchItemFailures": []}
    assert jobs_named(batch_api, local_batch, f"jb-{job.job_id}-1") == []


def test_a_cpu_job_goes_to_the_cpu_queue(submit_function, service, module_stack, batch_api, local_batch) -> None:
    _, invoke = submit_function()
    job = service.submit("acme", JobCreate(type="sleep", params={"seconds": 1200}, target="public")).job
    assert job.route is Route.BATCH and not job.requirements.gpu

    invoke(delivered(module_stack, message_of(job)))

    (summary,) = jobs_named(batch_api, local_batch, f"jb-{job.job_id}-1")
    (detail,) = batch_api.describe_jobs(jobs=[summary["jobId"]])["jobs"]
    assert local_batch.queues[detail["jobQueue"]].logical_id == "CpuJobQueue"


def test_a_refused_submission_and_a_malformed_body_come_back_alone(submit_function, service, module_stack,
                                                                   local_batch) -> None:
    queue_arn = gpu_queue(local_batch)
    _, invoke = submit_function(JOBBRIDGE_BATCH_JOB_QUEUE_GPU=queue_arn.replace("GpuJobQueue", "NoSuchQueue"))
    refused = service.submit("acme", JobCreate(type="transcode", params={"video_id": "r", "resolution": "8K"})).job
    fine = service.submit("acme", JobCreate(type="sleep", params={"seconds": 1200}, target="public")).job
    records = [delivered(module_stack, message_of(refused))["Records"][0],
               delivered(module_stack, message_of(fine))["Records"][0],
               {**delivered(module_stack, message_of(fine))["Records"][0], "body": "not json", "messageId": "junk"}]

    response = invoke({"Records": records})

    failed = {f["itemIdentifier"] for f in response["batchItemFailures"]}
    assert failed == {records[0]["messageId"], "junk"}


# --- cancel: a submitted Batch job is terminated, driven by the stream ------------------------------------


def stream_records_of(stack, job_id: str) -> list[dict[str, Any]]:
    """The job's records in the table's stream, as Lambda's event source mapping hands them over."""
    streams = stack.client("dynamodbstreams")
    records = []
    for shard in streams.describe_stream(StreamArn=stack.stream_arn)["StreamDescription"]["Shards"]:
        iterator = streams.get_shard_iterator(StreamArn=stack.stream_arn, ShardId=shard["ShardId"],
                                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
        while iterator:
            out = streams.get_records(ShardIterator=iterator, Limit=1000)
            if not out["Records"]:
                break
            records += [to_lambda_record(r, stack.stream_arn, LOCAL_REGION) for r in out["Records"]
                        if r["dynamodb"]["Keys"]["job_id"]["S"] == job_id]
            iterator = out.get("NextShardIterator")
    return records


def test_cancelling_a_queued_job_terminates_its_submitted_batch_job_through_the_stream(
        submit_function, service, module_stack, batch_api, local_batch, stack_store, function_env,
        bridge_handler, lambda_context) -> None:
    _, invoke = submit_function()
    job = service.submit("acme", JobCreate(type="transcode", params={"video_id": "gpu", "resolution": "8K"})).job
    invoke(delivered(module_stack, message_of(job)))
    (summary,) = jobs_named(batch_api, local_batch, f"jb-{job.job_id}-1")
    assert summary["status"] == "RUNNABLE"  # waiting for a GPU host: nothing ran yet

    cancelled = stack_store(module_stack).cancel(job.job_id, "acme")  # what POST /jobs/{id}/cancel does

    assert cancelled.state is State.CANCELLED
    (record,) = [r for r in stream_records_of(module_stack, job.job_id)
                 if r["dynamodb"]["NewImage"]["state"]["S"] == "CANCELLED"]
    (source,) = template().event_sources("BridgeFunction", "DynamoDB", module_stack.context)
    assert matches_any(parse_filters(source.properties["FilterCriteria"]["Filters"]), record)  # it reaches the bridge
    response = bridge_handler(stream_event(record), lambda_context(function_env("bridge", module_stack)))

    assert response == {"batchItemFailures": []}
    (detail,) = batch_api.describe_jobs(jobs=[summary["jobId"]])["jobs"]
    assert detail["status"] == "FAILED"  # TerminateJob on a job not yet STARTING cancels it
    assert job.job_id in detail["statusReason"] and "cancelled" in detail["statusReason"]


def test_a_cancelled_job_without_a_batch_job_costs_the_bridge_no_batch_call(
        service, module_stack, stack_store, function_env, bridge_handler, lambda_context) -> None:
    job = service.submit("acme", JobCreate(type="echo", params={}, target="public")).job
    stack_store(module_stack).cancel(job.job_id, "acme")
    (record,) = [r for r in stream_records_of(module_stack, job.job_id)
                 if r["dynamodb"]["NewImage"]["state"]["S"] == "CANCELLED"]
    (source,) = template().event_sources("BridgeFunction", "DynamoDB", module_stack.context)

    assert not matches_any(parse_filters(source.properties["FilterCriteria"]["Filters"]), record)
    assert bridge_handler(stream_event(record), lambda_context(function_env("bridge", module_stack))) == {
        "batchItemFailures": []}


def test_a_failed_record_comes_back_in_seconds_not_after_the_queues_visibility_timeout(
        submit_function, service, module_stack, local_batch) -> None:
    # given a submission Batch refuses (a queue that does not exist): the record fails
    queue_arn = gpu_queue(local_batch)
    _, invoke = submit_function(JOBBRIDGE_BATCH_JOB_QUEUE_GPU=queue_arn.replace("GpuJobQueue", "NoSuchQueue"))
    refused = service.submit("acme", JobCreate(type="transcode", params={"video_id": "soon", "resolution": "8K"})).job
    fine = service.submit("acme", JobCreate(type="sleep", params={"seconds": 1200}, target="public")).job
    records = [delivered(module_stack, message_of(refused))["Records"][0],
               delivered(module_stack, message_of(fine))["Records"][0]]

    assert invoke({"Records": records})["batchItemFailures"] == [{"itemIdentifier": records[0]["messageId"]}]

    # then its message is received again within seconds (public-batch's visibility timeout is 900 s)
    sqs, url = module_stack.client("sqs"), module_stack.queue_url(Route.BATCH)
    again = None
    for _ in range(3):  # at most 60 s: the first return waits 1-2 s
        for message in sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=20,
                                           MessageSystemAttributeNames=["ApproximateReceiveCount"]).get("Messages", []):
            if json.loads(message["Body"]).get("job_id") == refused.job_id:
                again = message
        if again:
            break
    assert again is not None and again["Attributes"]["ApproximateReceiveCount"] == "2"


def test_a_batch_job_that_ended_unclaimed_with_its_event_lost_is_found_when_the_message_comes_again(
        submit_function, service, module_stack, batch_api, local_batch, stack_store) -> None:
    # given an attempt's Batch job, cancelled by Batch before its container started (a job queue's
    # jobStateTimeLimitActions on a RUNNABLE job), whose state-change event never reached BatchEventsFunction
    _, invoke = submit_function()
    job = service.submit("acme", JobCreate(type="transcode", params={"video_id": "lost", "resolution": "8K"})).job
    assert invoke(delivered(module_stack, message_of(job))) == {"batchItemFailures": []}
    (summary,) = jobs_named(batch_api, local_batch, f"jb-{job.job_id}-1")
    batch_api.cancel_job(jobId=summary["jobId"], reason="MISCONFIGURATION:JOB_RESOURCE_REQUIREMENT: stuck RUNNABLE")
    assert batch_api.describe_jobs(jobs=[summary["jobId"]])["jobs"][0]["status"] == "FAILED"

    # when the sweeper sends the waiting job's message again
    assert invoke(delivered(module_stack, message_of(job))) == {"batchItemFailures": []}

    # then batch_submit asked Batch (DescribeJobs) and counted the attempt: retried, with Batch's reason
    again = stack_store(module_stack).get(job.job_id)
    assert (again.state, again.attempt) == (State.QUEUED, 1)
    assert again.error is not None and "stuck RUNNABLE" in again.error.message
    assert len(jobs_named(batch_api, local_batch, f"jb-{job.job_id}-1")) == 1  # no second Batch job for it


def test_the_local_batch_needs_no_image_parameter(module_stack) -> None:
    # The image is this checkout locally: the ECR URI parameter (no default) may stay unset.
    context = dataclasses.replace(module_stack.context, parameters={})
    batch = LocalBatch(template(), context, aws_env={}, run_containers=False)
    try:
        assert {d.container["image"] for d in batch.definitions.values()} == {"jobbridge-batch:local"}
    finally:
        batch.close()
