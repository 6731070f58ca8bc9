"""Job types that misbehave, for the agent's tests (JOBBRIDGE_JOB_MODULES=fixtures_jobs.agent_jobs):
a function that ignores cancel and timeouts, one that dies, one whose child process would outlive it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobbridge.models import Route
from jobbridge.registry import Backoff, job_type


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StubbornParams(_Params):
    seconds: float = Field(default=60.0, ge=0, le=3600)


@job_type("stubborn", params=StubbornParams, placements={Route.PRIVATE}, timeout_s=600, max_attempts=2,
          backoff=Backoff(0.5, 1.0))
def stubborn(params: StubbornParams, ctx: Any) -> dict[str, Any]:
    """Never looks at ctx: neither a cancel nor its timeout stops it; only a kill does."""
    end = time.monotonic() + params.seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    return {"slept_s": params.seconds}


@job_type("stubborn_short", params=StubbornParams, placements={Route.PRIVATE}, timeout_s=2, max_attempts=1)
def stubborn_short(params: StubbornParams, ctx: Any) -> dict[str, Any]:
    """Like stubborn, with a 2 s timeout it ignores."""
    return stubborn(params, ctx)


class CrashParams(_Params):
    code: int = Field(default=3, ge=0, le=255)


@job_type("crash", params=CrashParams, placements={Route.PRIVATE}, timeout_s=60, max_attempts=1)
def crash(params: CrashParams, ctx: Any) -> None:
    """The process dies without a word (as if the OOM killer took it)."""
    os._exit(params.code)


class SpawnerParams(_Params):
    pid_file: str = Field(min_length=1)


@job_type("spawner", params=SpawnerParams, placements={Route.PRIVATE}, timeout_s=600, max_attempts=1)
def spawner(params: SpawnerParams, ctx: Any) -> None:
    """Starts a long child process, writes its pid, and waits for it, ignoring ctx."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    Path(params.pid_file).write_text(str(child.pid))
    child.wait()


class ProgressParams(_Params):
    steps: int = Field(default=3, ge=1, le=100)


@job_type("progress_then_fail", params=ProgressParams, placements={Route.PRIVATE}, timeout_s=60, max_attempts=1)
def progress_then_fail(params: ProgressParams, ctx: Any) -> None:
    """Reports progress, then raises a plain exception (a job's own bug)."""
    for step in range(params.steps):
        ctx.progress((step + 1) / params.steps, f"step {step + 1}")
    raise ZeroDivisionError("the job's own bug")
