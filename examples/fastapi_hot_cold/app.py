"""A video shop's own API: the hot/cold pattern with jobbridge.

``POST /videos`` is the hot part: it records the upload and answers 202 in milliseconds; the slow
part, transcoding, is handed to jobbridge in process (``JobSubmitter``: one conditional write to
the jobs table, no HTTP hop), which runs it on AWS Batch (8K, on a GPU) or on premises (lower
resolutions). ``GET /videos/{id}`` reads the job back. In AWS this app is a Lambda behind API Gateway
(Mangum) with ``JOBBRIDGE_TABLE_NAME`` set; locally it runs against `make run`:

    make run                                                      # one terminal
    JOBBRIDGE_STACK_FILE=.jobbridge/local/stack.json \\
      .venv/bin/uvicorn app:app --app-dir examples/fastapi_hot_cold --port 8080
    curl -s -XPOST localhost:8080/videos -d '{"title": "Launch", "resolution": "8K"}' -H 'content-type: application/json'
"""

from __future__ import annotations

import json
import os
import uuid
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from jobbridge import JobSubmitter
from jobbridge.errors import IdempotencyConflict, InvalidParams, InvalidRequest, JobNotFound

TENANT = "video-shop"  # the jobs are this tenant's: its token reads them through the jobbridge API

app = FastAPI(title="video shop")
catalog: dict[str, dict[str, Any]] = {}  # a real app keeps this in its own database


class Upload(BaseModel):
    title: str = Field(min_length=1, max_length=200)
    resolution: Literal["480p", "720p", "1080p", "1440p", "4K", "8K"] = "1080p"
    duration_s: float = Field(default=4.0, ge=0, le=3600, description="how long the (simulated) encode takes")


@lru_cache(maxsize=1)
def submitter() -> JobSubmitter:
    """Built once per process, on first use (not at import: cheap cold starts)."""
    stack_file = os.environ.get("JOBBRIDGE_STACK_FILE")
    if stack_file:
        return local_submitter(Path(stack_file))
    return JobSubmitter.from_env(TENANT)


def local_submitter(stack_file: Path) -> JobSubmitter:
    """Against `make run`: its moto server and table, as ``stack.json`` names them."""
    import boto3

    from jobbridge.config import Settings

    stack = json.loads(stack_file.read_text())
    dynamodb = boto3.session.Session().client(
        "dynamodb", endpoint_url=stack["endpoint_url"], region_name=stack["region"],
        aws_access_key_id="testing", aws_secret_access_key="testing")
    return JobSubmitter(TENANT, Settings(table_name=stack["table"]), dynamodb_client=dynamodb)


@app.post("/videos", status_code=202)
def upload(body: Upload) -> dict[str, Any]:
    video_id = f"v-{uuid.uuid4().hex[:12]}"
    # The key makes the hand-off safe to retry: a second try returns the same job.
    submitted = submitter().submit("transcode", {"video_id": video_id, "resolution": body.resolution,
                                                 "duration_s": body.duration_s},
                                   idempotency_key=f"transcode-{video_id}-{body.resolution}")
    catalog[video_id] = {"title": body.title, "job_id": submitted.job.job_id}
    return {"video_id": video_id, "job_id": submitted.job.job_id, "runs_on": submitted.job.route.value}


@app.get("/videos/{video_id}")
def video(video_id: str) -> dict[str, Any]:
    entry = catalog.get(video_id)
    if entry is None:
        raise HTTPException(404, f"no video {video_id}")
    job = submitter().get(entry["job_id"])
    progress = job.progress.fraction if job.progress else 0.0
    return {"video_id": video_id, "title": entry["title"], "transcode": job.state.value, "progress": progress,
            "rendition": (job.result or {}).get("output") if isinstance(job.result, dict) else None}


@app.exception_handler(InvalidParams)
@app.exception_handler(InvalidRequest)
async def refused(request: Request, exc: InvalidParams | InvalidRequest) -> JSONResponse:
    return JSONResponse({"detail": str(exc), "errors": exc.errors}, status_code=422)


@app.exception_handler(IdempotencyConflict)
@app.exception_handler(JobNotFound)
async def conflict(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409 if isinstance(exc, IdempotencyConflict) else 404)
