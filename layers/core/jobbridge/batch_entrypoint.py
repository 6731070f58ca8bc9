"""The AWS Batch container's entrypoint: ``python -m jobbridge.batch_entrypoint``.

Runs ONE job with the same Runner as the Lambda worker and the agent, against DynamoDB directly
(the job role allows GetItem/UpdateItem on the jobs table and nothing else). What to run comes
from the environment BatchSubmitter put in the SubmitJob overrides:

    JOBBRIDGE_JOB_ID, JOBBRIDGE_EXPECTED_ATTEMPT, JOBBRIDGE_CORRELATION_ID (optional)
    AWS_BATCH_JOB_ID (set by Batch)   ->  lease owner "batch:<AWS_BATCH_JOB_ID>"

The job type's function runs in a child process that holds none of the runner's AWS credentials:
the runner builds its DynamoDB client, removes every credential variable from its environment and
makes itself non-dumpable (jobbridge.sandbox), then starts the function with the agent's executor
(jobbridge_agent.process, shipped in the image beside the core). Job code, given a hostile input,
cannot reach the job role (docs/SECURITY.md, "Job code").

The attempt's time budget is the job type's timeout (Batch's own attempt timeout, set at submit,
is a little longer: a backstop). When Batch re-runs the container after a host failure, the new
container takes the job over from the lost one (same Batch job id, same owner; see
JobStore.claim ``resume_own_lease``).

Exit status: 0 when the job is settled or not ours to settle (succeeded, failed, retry scheduled,
cancelled, dropped as a stale duplicate, abandoned to another owner); 1 when the final write could
not be made (the job is left RUNNING, and functions/batch_events settles it from Batch's FAILED
event); 2 when the environment is not a job's.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Mapping

from pydantic import ValidationError

from .batch import BatchContainerLifecycle, ContainerSettings, batch_owner
from . import aws, sandbox
from .models import Route
from .registry import load_registry
from .runner import Execute, Outcome, Runner, RunnerConfig, RunResult, execute_inline
from .store import JobStore

log = logging.getLogger("jobbridge.batch_entrypoint")  # by name: run with -m, __name__ is "__main__"

EXIT_SETTLED = 0
EXIT_UNSETTLED = 1
EXIT_USAGE = 2


def exit_code(result: RunResult) -> int:
    return EXIT_UNSETTLED if result.outcome is Outcome.UNSETTLED else EXIT_SETTLED


def run(settings: ContainerSettings, batch_job_id: str, *, store: JobStore | None = None,
        execute: Execute = execute_inline) -> RunResult:
    registry = load_registry(settings.job_modules)
    # The route fence: the container's writes are conditional on the job being a batch job.
    store = (store or JobStore(settings.table_name, retention_days=settings.retention_days)).for_route(Route.BATCH)
    runner = Runner(BatchContainerLifecycle(store, registry), registry, RunnerConfig(owner=batch_owner(batch_job_id)),
                    execute=execute)
    return runner.run(settings.job_id, expected_attempt=settings.expected_attempt, time_budget_s=None,
                      correlation_id=settings.correlation_id)


def main(environ: Mapping[str, str] | None = None) -> int:
    env = os.environ if environ is None else environ
    from .observability import get_logger

    logger = get_logger(env.get("POWERTOOLS_SERVICE_NAME") or "jobbridge")
    try:
        settings = ContainerSettings.from_env(env)
    except ValidationError as exc:
        print(f"jobbridge.batch_entrypoint: not a job's environment: {exc}", file=sys.stderr)
        return EXIT_USAGE
    batch_job_id = env.get("AWS_BATCH_JOB_ID")
    if not batch_job_id:
        print("jobbridge.batch_entrypoint: AWS_BATCH_JOB_ID is not set (AWS Batch sets it)", file=sys.stderr)
        return EXIT_USAGE
    logger.append_keys(job_id=settings.job_id, correlation_id=settings.correlation_id, batch_job_id=batch_job_id,
                       batch_attempt=env.get("AWS_BATCH_JOB_ATTEMPT"))
    result = run(settings, batch_job_id, execute=isolated_executor(settings, env.get("POWERTOOLS_LOG_LEVEL") or "INFO"))
    code = exit_code(result)
    logger.info("container done", extra={"outcome": result.outcome.value, "exit_code": code, "detail": result.detail})
    return code


def isolated_executor(settings: ContainerSettings, log_level: str) -> Execute:
    """The job's function in a child process without this process's AWS credentials (the module
    docstring says how). Call once, before any job code runs: it seals this process for good."""
    from jobbridge_agent.process import ProcessExecutor

    aws.client("dynamodb")  # the runner's client, its credentials resolved now: the store uses it
    removed = sandbox.seal_credentials()
    inspectable = not sandbox.forbid_inspection()
    log.info("job code runs without the runner's credentials",
             extra={"removed_variables": removed, "runner_inspectable": inspectable})
    return ProcessExecutor(job_modules=settings.job_modules, log_level=log_level)


if __name__ == "__main__":
    raise SystemExit(main())
