"""A job type that looks for its runtime's AWS credentials, as hostile job code would
(JOBBRIDGE_JOB_MODULES=fixtures_jobs.peek_jobs): the environment, the SDK's default chain, and the
runner's own process (``/proc/<parent>/environ``)."""

from __future__ import annotations

import os
from typing import Any

from pydantic import BaseModel, ConfigDict

from jobbridge.models import Route
from jobbridge.registry import job_type

CREDENTIAL_PREFIXES = ("AWS_ACCESS_KEY", "AWS_SECRET", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_CONTAINER_")


class PeekParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


@job_type("peek", params=PeekParams, placements={Route.BATCH, Route.LAMBDA}, timeout_s=60, max_attempts=1)
def peek(params: PeekParams, ctx: Any) -> dict[str, Any]:
    import boto3

    try:
        with open(f"/proc/{os.getppid()}/environ", "rb") as fh:
            parent = fh.read().decode("utf-8", "replace").replace("\x00", "\n")
    except OSError as exc:
        parent = f"denied: {type(exc).__name__}"
    return {
        "pid": os.getpid(),
        "environment": sorted(k for k in os.environ if k.startswith(CREDENTIAL_PREFIXES)),
        "sdk_found_credentials": boto3.session.Session().get_credentials() is not None,
        "parent_environ": parent,
    }
