"""The example job types: echo, sleep, fail, transcode, genome_align and checksum (hot).

They run unchanged in the Lambda worker, the Batch container and the on-prem agent.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import PermanentError, RetryableError
from ..models import DataClassification, Requirements, Route, Target
from ..registry import Backoff, PlacementHint, job_type

ANYWHERE = {Route.LAMBDA, Route.BATCH, Route.PRIVATE}


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EchoParams(BaseModel):
    """Anything: echo returns its params as they came."""

    model_config = ConfigDict(extra="allow")


@job_type("echo", params=EchoParams, placements=ANYWHERE, timeout_s=60, max_attempts=3)
def echo(params: EchoParams, ctx: Any) -> dict[str, Any]:
    """Return the params unchanged. Runs anywhere."""
    return params.model_dump()


class ChecksumParams(_Params):
    text: str = Field(max_length=65536, description="The text to hash (UTF-8)")
    algorithm: Literal["sha256", "blake2b"] = "sha256"


@job_type("checksum", params=ChecksumParams, placements={Route.LAMBDA}, timeout_s=10, max_attempts=1,
          hot_budget_ms=250)
def checksum(params: ChecksumParams, ctx: Any) -> dict[str, Any]:
    """Hash a text. Hot: run in the submit request, which answers 200 with the digest."""
    digest = hashlib.new(params.algorithm, params.text.encode("utf-8", "surrogatepass")).hexdigest()
    return {"algorithm": params.algorithm, "hexdigest": digest, "bytes": len(params.text.encode("utf-8", "surrogatepass"))}


class SleepParams(_Params):
    seconds: float = Field(default=1.0, ge=0, le=6 * 3600, description="Total time to sleep")
    steps: int = Field(default=10, ge=1, le=1000, description="Progress is reported at each step")


def _sleep_plan(params: SleepParams) -> PlacementHint:
    # The runtime is known from the params: past Lambda's 15 minutes it must go to Batch.
    return PlacementHint(requirements=Requirements(expected_runtime_s=max(1, int(params.seconds) + 1)))


@job_type(
    "sleep", params=SleepParams, placements=ANYWHERE, timeout_s=6 * 3600 + 60, max_attempts=3, plan=_sleep_plan
)
def sleep(params: SleepParams, ctx: Any) -> dict[str, Any]:
    """Sleep in steps, reporting progress at each step and stopping when cancelled."""
    step = params.seconds / params.steps
    for index in range(params.steps):
        ctx.sleep(step)  # raises JobCancelled if a cancel arrives meanwhile
        ctx.progress((index + 1) / params.steps, f"step {index + 1}/{params.steps}")
    return {"slept_s": params.seconds, "steps": params.steps}


class FailParams(_Params):
    message: str = Field(default="failed on purpose", max_length=1024)
    retryable: bool = True


@job_type("fail", params=FailParams, placements=ANYWHERE, timeout_s=60, max_attempts=3, backoff=Backoff(1.0, 30.0))
def fail(params: FailParams, ctx: Any) -> None:
    """Raise, retryable or not: exercises retries, backoff and FAILED."""
    if params.retryable:
        raise RetryableError(params.message)
    raise PermanentError(params.message)


Resolution = Literal["480p", "720p", "1080p", "1440p", "4K", "8K"]


class TranscodeParams(_Params):
    video_id: str = Field(min_length=1, max_length=256)
    resolution: Resolution = "1080p"
    hdr: bool = False
    duration_s: float = Field(default=2.0, ge=0, le=3600, description="Simulated encoding time")


def _transcode_plan(params: TranscodeParams) -> PlacementHint:
    # The video scenario: 8K or HDR needs a GPU, which the public cloud has on AWS Batch; anything
    # lower runs on the private agent, next to the studio's own storage.
    if params.resolution == "8K" or params.hdr:
        return PlacementHint(requirements=Requirements(gpu=True, memory_mb=16384), target=Target.PUBLIC)
    return PlacementHint(target=Target.PRIVATE)


@job_type(
    "transcode",
    params=TranscodeParams,
    placements={Route.BATCH, Route.PRIVATE},
    timeout_s=4 * 3600,
    max_attempts=3,
    backoff=Backoff(10.0, 600.0),
    plan=_transcode_plan,
)
def transcode(params: TranscodeParams, ctx: Any) -> dict[str, Any]:
    """Transcode a video: 8K or HDR on a GPU in AWS Batch, lower resolutions on the private agent."""
    passes = ("probe", "decode", "encode", "package")
    for index, name in enumerate(passes):
        ctx.sleep(params.duration_s / len(passes))
        ctx.progress((index + 1) / len(passes), name)
    suffix = f"{params.resolution}{'-hdr' if params.hdr else ''}"
    return {"video_id": params.video_id, "rendition": suffix, "output": f"renditions/{params.video_id}/{suffix}.mp4"}


class GenomeAlignParams(_Params):
    sample_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_-]+$")
    reference: Literal["GRCh37", "GRCh38", "T2T-CHM13"] = "GRCh38"
    duration_s: float = Field(default=1.0, ge=0, le=3600)


@job_type(
    "genome_align",
    params=GenomeAlignParams,
    placements={Route.PRIVATE},
    default_target=Target.PRIVATE,
    timeout_s=8 * 3600,
    max_attempts=2,
    data_classification=DataClassification.RESTRICTED,
)
def genome_align(params: GenomeAlignParams, ctx: Any) -> dict[str, Any]:
    """Align a patient's sample: restricted data, so it only ever runs on the private agent."""
    stages = ("load", "align", "call variants")
    for index, name in enumerate(stages):
        ctx.sleep(params.duration_s / len(stages))
        ctx.progress((index + 1) / len(stages), name)
    return {"sample_id": params.sample_id, "reference": params.reference, "bam": f"aligned/{params.sample_id}.bam"}
