"""The Batch container as AWS Batch starts it (``python -m jobbridge.batch_entrypoint`` in a process
of its own, with the job role's credentials in its environment), running a job type that hunts for
those credentials: job code must find none. The runner keeps them (it claims and settles through
DynamoDB); the job's function runs in a child process that never had them, and cannot read them
from the runner's process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobbridge.ids import iso, new_job_id, utcnow
from jobbridge.models import Job, Route, State
from jobbridge.store import JobStore

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET = "s3cr3t-job-role-key-do-not-leak"
TOKEN = "FwoGZXIvYXdzEXAMPLESESSIONTOKEN"


def test_job_code_in_the_batch_container_finds_no_aws_credentials(template_stack) -> None:
    # given a batch job of a type that looks for credentials everywhere it can
    stack = template_stack()
    store = JobStore(stack.table_name, client=stack.client("dynamodb"))
    now = iso(utcnow())
    job = Job(job_id=new_job_id(), tenant="acme", type="peek", params={}, route=Route.BATCH, state=State.QUEUED,
              max_attempts=1, timeout_s=60, created_at=now, updated_at=now)
    store.create(job)

    # when the container runs it, with credentials in its environment as ECS puts them there
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join(str(ROOT / d) for d in ("layers/core", "agent", "tests")),
        "AWS_ENDPOINT_URL": stack.endpoint_url, "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLEJOBROLE01", "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_SESSION_TOKEN": TOKEN,
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/7f0e2c1a-example",
        "AWS_EC2_METADATA_DISABLED": "true",  # no instance metadata to fall back on here
        "JOBBRIDGE_TABLE_NAME": stack.table_name, "JOBBRIDGE_JOB_ID": job.job_id, "JOBBRIDGE_EXPECTED_ATTEMPT": "0",
        "JOBBRIDGE_JOB_MODULES": "fixtures_jobs.peek_jobs", "AWS_BATCH_JOB_ID": "b-7f0e2c1a",
    }
    done = subprocess.run([sys.executable, "-m", "jobbridge.batch_entrypoint"], env=env, capture_output=True,
                          text=True, timeout=120)

    # then the runner settled the job, and the job's function found nothing
    assert done.returncode == 0, done.stderr[-2000:]
    final = store.get(job.job_id)
    assert final.state is State.SUCCEEDED, final.error
    found = final.result
    assert found["environment"] == []
    assert found["sdk_found_credentials"] is False
    # The runner made itself non-dumpable, so a job process of the same user (the image's USER 10001)
    # cannot read its /proc/<pid>/environ. Root reads any process's: only a non-root run can show it.
    sealed = [line for line in map(json.loads, done.stdout.splitlines()) if "removed_variables" in line]
    assert [(s["runner_inspectable"], sorted(s["removed_variables"])) for s in sealed] == [
        (False, ["AWS_ACCESS_KEY_ID", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_SECRET_ACCESS_KEY",
                 "AWS_SESSION_TOKEN"])]
    if os.geteuid() != 0:
        assert found["parent_environ"].startswith("denied"), "the runner's environment was readable"
        assert SECRET not in str(found) and TOKEN not in str(found)
    assert final.lease_owner == "batch:b-7f0e2c1a"  # the runner kept its own credentials
