"""AWS Batch on this machine: the Batch API for template.yaml's job queues and job definitions, each
job's container run as a local process, and "Batch Job State Change" events delivered to the
functions whose EventBridge rules match them.

boto3 makes its real calls: the local stack points the Batch client at this server with the
standard service-specific variable ``AWS_ENDPOINT_URL_BATCH`` (everything else stays on moto
through ``AWS_ENDPOINT_URL``), so no code outside jobbridge_local knows it is local.

Why not moto's Batch: moto server accepts SubmitJob, but then either runs the container in Docker
(there is none: the job is marked FAILED at once) or, with its ``batch_simple`` backend, marks the
job SUCCEEDED the moment it is submitted. Neither lets a job's real outcome show in DescribeJobs,
neither implements the retry strategy (moto: "RetryStrategy ... not yet implemented"), and neither
emits state change events; moto would also want EC2 subnets, security groups and IAM instance
profiles to exist for the compute environments.

What is emulated, as AWS Batch documents it:

- SubmitJob, ListJobs (by status, or the JOB_NAME filter: every status, case-insensitive, a
  trailing ``*`` is a prefix), DescribeJobs, TerminateJob, CancelJob, DescribeJobQueues,
  DescribeJobDefinitions; errors are ``ClientException`` (HTTP 400) like Batch's.
  https://docs.aws.amazon.com/batch/latest/APIReference/API_Operations.html
- Job states SUBMITTED -> RUNNABLE -> STARTING -> RUNNING -> SUCCEEDED | FAILED, with an event for
  every change after submission (none for the submission itself).
- The container: the job definition's ``command`` (``python`` is this interpreter: the "image" is
  this checkout), its ``environment`` with SubmitJob's overrides, ``AWS_BATCH_JOB_ID``,
  ``AWS_BATCH_JOB_ATTEMPT``, ``AWS_BATCH_JQ_NAME``, and the emulator's AWS variables standing in
  for the job role. Its output goes to ``<log_dir>/<logStreamName>.log``.
- Exit 0 is SUCCEEDED; anything else fails the attempt with "Essential container in task exited"
  and the exit code. The retry strategy's ``evaluateOnExit`` rules (globs on statusReason, reason,
  exitCode; the first match decides; none matching retries) decide whether the job goes back to
  RUNNABLE for another attempt. Attempt timeouts (``attemptDurationSeconds``) kill the container
  and are not retried; TerminateJob kills it with the caller's reason, not retried.
  https://docs.aws.amazon.com/batch/latest/userguide/job_retries.html

Not emulated: compute environments (no capacity limits beyond ``max_running`` containers at once,
no vCPU/memory/GPU accounting), scheduling priority and fair share, array and multi-node jobs,
dependencies, job state time limit actions.

For tests and demos there is one local-only route, ``POST /_local/jobs/{jobId}/fail`` with
``{"statusReason": ..., "reason": ..., "exitCode": ...}``: the job's running container is killed
(or its next attempt fails before it starts) and the attempt ends with those values, as when an
instance is reclaimed ("Host EC2 (instance i-...) terminated."), a container runs out of memory
("OutOfMemoryError: Container killed due to memory usage") or an image cannot be pulled
("CannotPullContainerError: ..."). ``GET /_local/health`` answers 200.

The server is a library class with a lifecycle: ``start()`` returns once it listens, ``run()``
blocks until ``shutdown()`` (which only sets a flag), ``close()`` stops containers still running.

Example::

    batch = LocalBatch(template, context, aws_env=local_aws_environment(moto_url), port=free_port(),
                       deliver=lambda event: print(event["detail"]["status"]))
    batch.start()
    boto3.client("batch", endpoint_url=batch.endpoint_url, ...).submit_job(...)
    batch.close()
"""

from __future__ import annotations

import json
import logging
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .event_filter import matches_any, parse_filters
from .template import FUNCTION_TYPES, LocalContext, Template, TemplateError

logger = logging.getLogger(__name__)

JOB_QUEUE_TYPE = "AWS::Batch::JobQueue"
JOB_DEFINITION_TYPE = "AWS::Batch::JobDefinition"
COMPUTE_ENVIRONMENT_TYPE = "AWS::Batch::ComputeEnvironment"
EVENT_RULE_TYPES = ("EventBridgeRule", "CloudWatchEvent")
JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")  # SubmitJob's jobName rule
LOCAL_IMAGE = "jobbridge-batch:local"
ESSENTIAL_EXITED = "Essential container in task exited"
TIMED_OUT = "Job attempt duration exceeded timeout"
DEFAULT_MAX_RUNNING = 4
DELIVERY_RETRY_DELAYS = (1.0, 2.0)  # Lambda retries a failed asynchronous invocation twice
STOP_GRACE_SECONDS = 5.0
DROPPED_EVENT_MARKER = "injected fault: event lost to the BatchEventsDLQ"  # the soak counts these lines
# Variables a process needs to start at all; a container would get them from its image.
_PROCESS_BASICS = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SYSTEMROOT")
_LOCAL_FAILURE = re.compile(r"^/_local/jobs/(?P<job_id>[^/]+)/fail$")
# The Batch API's operations this server answers (botocore's batch service model: rest-json).
_OPERATIONS = {
    "/v1/submitjob": "submit_job",
    "/v1/listjobs": "list_jobs",
    "/v1/describejobs": "describe_jobs",
    "/v1/terminatejob": "terminate_job",
    "/v1/canceljob": "cancel_job",
    "/v1/describejobqueues": "describe_job_queues",
    "/v1/describejobdefinitions": "describe_job_definitions",
}


class ClientException(Exception):
    """Batch's 400 for a request it refuses (unknown queue, bad name ...)."""


def _now_ms() -> int:
    return int(time.time() * 1000)


def _glob(pattern: str, value: str) -> bool:
    """EvaluateOnExit's patterns: exact, or a prefix when they end with ``*``."""
    return value.startswith(pattern[:-1]) if pattern.endswith("*") else value == pattern


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def api_shape(value: Any, _verbatim: bool = False) -> Any:
    """CloudFormation's property names (PascalCase) -> the Batch API's (camelCase). The keys of
    ``Options``, ``Tags`` and ``Parameters`` maps are the user's own and kept."""
    if isinstance(value, list):
        return [api_shape(v) for v in value]
    if isinstance(value, dict):
        if _verbatim:
            return dict(value)
        return {k[:1].lower() + k[1:]: api_shape(v, k in ("Options", "Tags", "Parameters")) for k, v in value.items()}
    return value


# --------------------------------------------------------------------------------------------
# What template.yaml declares
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JobQueue:
    logical_id: str
    name: str
    arn: str
    priority: int
    state: str
    compute_environments: list[dict[str, Any]]

    def describe(self) -> dict[str, Any]:
        return {"jobQueueName": self.name, "jobQueueArn": self.arn, "state": self.state, "status": "VALID",
                "statusReason": "JobQueue Healthy", "priority": self.priority,
                "computeEnvironmentOrder": self.compute_environments, "tags": {}}


@dataclass(frozen=True)
class JobDefinition:
    logical_id: str
    name: str
    arn: str
    revision: int
    type: str
    container: dict[str, Any]  # API-shaped containerProperties
    retry_strategy: dict[str, Any] | None
    timeout: dict[str, Any] | None
    platform_capabilities: list[str]

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"jobDefinitionName": self.name, "jobDefinitionArn": self.arn, "revision": self.revision,
                               "status": "ACTIVE", "type": self.type, "containerProperties": self.container,
                               "platformCapabilities": self.platform_capabilities, "tags": {}}
        if self.retry_strategy:
            out["retryStrategy"] = self.retry_strategy
        if self.timeout:
            out["timeout"] = self.timeout
        return out


def batch_resources(template: Template, context: LocalContext) -> tuple[list[JobQueue], list[JobDefinition]]:
    """The job queues and job definitions of ``template``, resolved in ``context``."""
    resolver = template.resolver(context)
    queues: list[JobQueue] = []
    definitions: list[JobDefinition] = []
    for logical_id, resource in template.resources_of_type(JOB_QUEUE_TYPE).items():
        if not resolver.resource_enabled(logical_id):
            continue
        props = resolver.resolve(resource.get("Properties") or {})
        queues.append(JobQueue(
            logical_id=logical_id, name=resolver.physical_name(logical_id), arn=resolver.ref(logical_id),
            priority=int(props.get("Priority", 1)), state=str(props.get("State", "ENABLED")),
            compute_environments=[{"order": int(ce["Order"]), "computeEnvironment": ce["ComputeEnvironment"]}
                                  for ce in props.get("ComputeEnvironmentOrder") or []],
        ))
    for logical_id, resource in template.resources_of_type(JOB_DEFINITION_TYPE).items():
        if not resolver.resource_enabled(logical_id):
            continue
        raw = dict(resource.get("Properties") or {})
        raw_container = dict(raw.pop("ContainerProperties", None) or {})
        raw_image = raw_container.pop("Image", None)
        props = resolver.resolve(raw)
        arn = resolver.ref(logical_id)
        container = api_shape(resolver.resolve(raw_container))
        try:
            container["image"] = resolver.resolve(raw_image)
        except TemplateError:
            # Locally the "image" is this checkout: its URI parameter (an ECR image) may be unset.
            container["image"] = LOCAL_IMAGE
        # CloudFormation passes every environment value as a string (a Number parameter included).
        container["environment"] = [{"name": e["name"], "value": _text(e.get("value", ""))}
                                    for e in container.get("environment") or []]
        definitions.append(JobDefinition(
            logical_id=logical_id, name=resolver.physical_name(logical_id), arn=arn,
            revision=int(arn.rsplit(":", 1)[-1]), type=str(props.get("Type", "container")),
            container=container,
            retry_strategy=api_shape(props["RetryStrategy"]) if props.get("RetryStrategy") else None,
            timeout=api_shape(props["Timeout"]) if props.get("Timeout") else None,
            platform_capabilities=list(props.get("PlatformCapabilities") or ["EC2"]),
        ))
    return queues, definitions


@dataclass(frozen=True)
class EventTarget:
    """A function an EventBridge rule of the template sends matching events to."""

    function_logical_id: str
    event_name: str
    filters: list[dict[str, Any]]  # parsed patterns (event_filter)

    def matches(self, event: Mapping[str, Any]) -> bool:
        return matches_any(self.filters, event)


def event_targets(template: Template, context: LocalContext) -> list[EventTarget]:
    """Every ``EventBridgeRule`` (or ``CloudWatchEvent``) event of the template's functions."""
    targets = []
    for logical_id in template.resources_of_type(*FUNCTION_TYPES):
        for event_type in EVENT_RULE_TYPES:
            for source in template.event_sources(logical_id, event_type, context):
                pattern = source.properties.get("Pattern")
                if pattern:
                    targets.append(EventTarget(logical_id, source.name, parse_filters([{"Pattern": pattern}])))
    return targets


class EventDelivery:
    """EventBridge -> Lambda, asynchronously and in order: each matching target is invoked; a
    failed invocation is retried twice, as Lambda retries an asynchronous one, then dropped with
    an error (in AWS it would go to the function's DeadLetterQueue).

    ``drop`` (a fault, for the soak): asked about each event a target matches; when it answers
    true the event is not delivered at all, as one that went to the BatchEventsDLQ (which nothing
    reads). The job it concerned must then be recovered some other way (its lease lapsing)."""

    def __init__(self, targets: Iterable[EventTarget], invoke: Callable[[str, dict[str, Any]], Any],
                 retry_delays: Iterable[float] = DELIVERY_RETRY_DELAYS,
                 drop: Callable[[dict[str, Any]], bool] | None = None) -> None:
        self.targets = list(targets)
        self.invoke = invoke
        self.retry_delays = tuple(retry_delays)
        self.drop = drop
        self.dropped: list[dict[str, Any]] = []  # the details of the events dropped by ``drop``
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="batch-events", daemon=True)
        self._thread.start()

    def __call__(self, event: dict[str, Any]) -> None:
        self._events.put(event)

    def close(self, timeout: float = STOP_GRACE_SECONDS) -> None:
        self._events.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            event = self._events.get()
            if event is None:
                return
            for target in self.targets:
                if not target.matches(event):
                    continue
                if self.drop is not None and self.drop(event):
                    detail = event.get("detail", {})
                    self.dropped.append(detail)
                    logger.warning("%s: dropped the %s event of Batch job %s", DROPPED_EVENT_MARKER, detail.get("status"),
                                   detail.get("jobName"))
                    continue
                self._deliver(target, event)

    def _deliver(self, target: EventTarget, event: dict[str, Any]) -> None:
        detail = event.get("detail", {})
        for attempt, delay in enumerate((0.0, *self.retry_delays)):
            time.sleep(delay)
            try:
                self.invoke(target.function_logical_id, event)
                return
            except Exception:  # noqa: BLE001 - the function's error, as Lambda would log it
                logger.exception("%s failed on the %s event of Batch job %s (try %d)", target.function_logical_id,
                                 detail.get("status"), detail.get("jobName"), attempt + 1)
        logger.error("dropped the %s event of Batch job %s after %d tries", detail.get("status"), detail.get("jobName"),
                     1 + len(self.retry_delays))


# --------------------------------------------------------------------------------------------
# Jobs
# --------------------------------------------------------------------------------------------


@dataclass
class LocalJob:
    job_id: str
    job_name: str
    job_arn: str
    queue: JobQueue
    definition: JobDefinition
    container_overrides: dict[str, Any]
    retry_strategy: dict[str, Any]
    timeout: dict[str, Any] | None
    parameters: dict[str, str]
    tags: dict[str, str]
    created_at: int = field(default_factory=_now_ms)
    status: str = "SUBMITTED"
    status_reason: str | None = None
    started_at: int | None = None
    stopped_at: int | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)
    current: dict[str, Any] = field(default_factory=dict)  # the container of the attempt in progress
    process: subprocess.Popen | None = None
    # Set while a container runs to end it with these values (TerminateJob, /_local/.../fail).
    stop_with: dict[str, Any] | None = None
    # An injected failure for the next attempt that has not started yet.
    fail_next: dict[str, Any] | None = None

    @property
    def attempt_number(self) -> int:
        return len(self.attempts) + 1

    def environment(self) -> list[dict[str, str]]:
        merged = {e["name"]: e["value"] for e in self.definition.container.get("environment") or []}
        merged.update({e["name"]: e["value"] for e in self.container_overrides.get("environment") or []})
        merged["AWS_BATCH_JOB_ID"] = self.job_id
        return [{"name": k, "value": v} for k, v in merged.items()]

    def container_detail(self) -> dict[str, Any]:
        base = {k: v for k, v in self.definition.container.items() if k != "environment"}
        if self.container_overrides.get("command"):
            base["command"] = self.container_overrides["command"]
        if self.container_overrides.get("resourceRequirements"):
            base["resourceRequirements"] = self.container_overrides["resourceRequirements"]
        last = self.current or (self.attempts[-1]["container"] if self.attempts else {})
        return {**base, "environment": self.environment(), "volumes": base.get("volumes", []),
                "mountPoints": base.get("mountPoints", []), "ulimits": base.get("ulimits", []),
                "networkInterfaces": [], "secrets": [], **last}

    def describe(self) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "jobArn": self.job_arn, "jobName": self.job_name, "jobId": self.job_id, "jobQueue": self.queue.arn,
            "status": self.status, "attempts": [dict(a) for a in self.attempts], "createdAt": self.created_at,
            "retryStrategy": self.retry_strategy, "dependsOn": [], "jobDefinition": self.definition.arn,
            "parameters": self.parameters, "container": self.container_detail(), "tags": self.tags,
            "propagateTags": False, "platformCapabilities": self.definition.platform_capabilities,
            "eksAttempts": [],
        }
        for key, value in (("statusReason", self.status_reason), ("startedAt", self.started_at),
                           ("stoppedAt", self.stopped_at), ("timeout", self.timeout)):
            if value is not None:
                detail[key] = value
        return detail

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"jobArn": self.job_arn, "jobId": self.job_id, "jobName": self.job_name,
                               "createdAt": self.created_at, "status": self.status,
                               "jobDefinition": self.definition.arn}
        for key, value in (("statusReason", self.status_reason), ("startedAt", self.started_at),
                           ("stoppedAt", self.stopped_at)):
            if value is not None:
                out[key] = value
        if self.attempts:
            container = self.attempts[-1]["container"]
            out["container"] = {k: container[k] for k in ("exitCode", "reason") if k in container}
        return out


def retry_action(strategy: Mapping[str, Any], status_reason: str, reason: str, exit_code: int | None) -> str:
    """RETRY or EXIT for a failed attempt: the first ``evaluateOnExit`` rule whose given conditions
    all match decides; when none matches, the job is retried."""
    values = {"onStatusReason": status_reason or "", "onReason": reason or "",
              "onExitCode": "" if exit_code is None else str(exit_code)}
    for rule in strategy.get("evaluateOnExit") or []:
        conditions = [(key, rule[key]) for key in values if rule.get(key) is not None]
        if all(_glob(pattern, values[key]) for key, pattern in conditions):
            return str(rule.get("action", "RETRY")).upper()
    return "RETRY"


class LocalBatch:
    """The Batch API on ``host:port`` for the template's queues and definitions (module docstring)."""

    def __init__(
        self,
        template: Template,
        context: LocalContext,
        *,
        aws_env: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        deliver: Callable[[dict[str, Any]], None] | None = None,
        max_running: int = DEFAULT_MAX_RUNNING,
        run_containers: bool = True,
        log_dir: Path | None = None,
        python_path: Iterable[str] = (),
        cwd: Path | None = None,
    ) -> None:
        self.context = context
        queues, definitions = batch_resources(template, context)
        self.queues = {q.arn: q for q in queues}
        self.definitions = {d.arn: d for d in definitions}
        self.aws_env = dict(aws_env)
        self.deliver = deliver
        self.max_running = max(1, max_running)
        self.run_containers = run_containers
        self.log_dir = log_dir
        self.python_path = [str(p) for p in python_path]
        self.cwd = cwd or template.base_dir
        self.jobs: dict[str, LocalJob] = {}
        self._lock = threading.RLock()
        self._runnable: queue.Queue[str | None] = queue.Queue()
        self._stop = threading.Event()
        self._closed = False
        self._workers: list[threading.Thread] = []
        self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        self._server.daemon_threads = True
        self._server_thread: threading.Thread | None = None

    @property
    def endpoint_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Listen and start the container slots; returns at once."""
        if self._server_thread is not None:
            return
        self._server_thread = threading.Thread(target=self._server.serve_forever, name="batch-api", daemon=True)
        self._server_thread.start()
        if self.run_containers:
            for index in range(self.max_running):
                worker = threading.Thread(target=self._work, name=f"batch-container-{index}", daemon=True)
                worker.start()
                self._workers.append(worker)
        logger.info("local Batch on %s: queues %s", self.endpoint_url, ", ".join(q.name for q in self.queues.values()))

    def run(self) -> None:
        """Start, then block until ``shutdown()``; then close."""
        self.start()
        try:
            self._stop.wait()
        finally:
            self.close()

    def shutdown(self) -> None:
        """Ask ``run()`` to return. Idempotent; never blocks."""
        self._stop.set()

    def close(self) -> None:
        """Stop serving, stop running containers (SIGTERM, then SIGKILL after a grace). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._server_thread is not None:  # shutdown() waits for serve_forever(): only if it runs
            self._server.shutdown()
        self._server.server_close()
        for _ in self._workers:
            self._runnable.put(None)
        with self._lock:
            running = [job.process for job in self.jobs.values() if job.process is not None]
        for process in running:
            _stop_process(process)
        for worker in self._workers:
            worker.join(STOP_GRACE_SECONDS)

    # -- the API ------------------------------------------------------------------------------

    def submit_job(self, request: dict[str, Any]) -> dict[str, Any]:
        name = request.get("jobName") or ""
        if not JOB_NAME.match(name):
            raise ClientException("Job name should match valid pattern")
        job_queue = self._queue(request.get("jobQueue"))
        definition = self._definition(request.get("jobDefinition"))
        job_id = str(uuid.uuid4())
        timeout = request.get("timeout") or definition.timeout
        if timeout and int(timeout.get("attemptDurationSeconds", 60)) < 60:
            raise ClientException("timeout.attemptDurationSeconds must be at least 60")
        job = LocalJob(
            job_id=job_id, job_name=name,
            job_arn=f"arn:aws:batch:{self.context.region}:{self.context.account_id}:job/{job_id}",
            queue=job_queue, definition=definition,
            container_overrides=request.get("containerOverrides") or {},
            retry_strategy=request.get("retryStrategy") or definition.retry_strategy or {"attempts": 1},
            timeout=timeout, parameters=request.get("parameters") or {}, tags=request.get("tags") or {},
        )
        with self._lock:
            self.jobs[job_id] = job
            # Batch evaluates a submitted job asynchronously; here at once: no dependencies, and
            # compute is whatever this machine has.
            self._set_status(job, "RUNNABLE")
        self._runnable.put(job_id)
        logger.info("submitted %s (%s) to %s", name, job_id, job_queue.name)
        return {"jobArn": job.job_arn, "jobName": name, "jobId": job_id}

    def list_jobs(self, request: dict[str, Any]) -> dict[str, Any]:
        if request.get("arrayJobId") or request.get("multiNodeJobId"):
            return {"jobSummaryList": []}  # no array or multi-node jobs here
        job_queue = self._queue(request.get("jobQueue"))
        filters = request.get("filters") or []
        with self._lock:
            jobs = [j for j in self.jobs.values() if j.queue.arn == job_queue.arn]
            if filters:
                # With a filter, jobStatus is ignored and every status is returned (API_ListJobs).
                for flt in filters:
                    if flt.get("name") != "JOB_NAME":
                        raise ClientException(f"filter {flt.get('name')} is not supported locally")
                    values = [v.lower() for v in flt.get("values") or []]
                    jobs = [j for j in jobs if any(_glob(v, j.job_name.lower()) for v in values)]
            else:
                status = request.get("jobStatus") or "RUNNING"  # Batch's default
                jobs = [j for j in jobs if j.status == status]
            jobs.sort(key=lambda j: j.created_at, reverse=True)
            return {"jobSummaryList": [j.summary() for j in jobs]}

    def describe_jobs(self, request: dict[str, Any]) -> dict[str, Any]:
        wanted = request.get("jobs") or []
        if len(wanted) > 100:
            raise ClientException("jobs: at most 100")
        with self._lock:
            found = [self.jobs.get(w) or next((j for j in self.jobs.values() if j.job_arn == w), None) for w in wanted]
            return {"jobs": [j.describe() for j in found if j is not None]}

    def terminate_job(self, request: dict[str, Any]) -> dict[str, Any]:
        job = self._job(request.get("jobId"))
        reason = request.get("reason") or ""
        with self._lock:
            if job.status in ("STARTING", "RUNNING") and job.process is not None:
                job.stop_with = {"statusReason": reason, "retry": False}
                _kill(job.process)
            elif job.status not in ("SUCCEEDED", "FAILED"):
                self._cancel(job, reason)
        return {}

    def cancel_job(self, request: dict[str, Any]) -> dict[str, Any]:
        job = self._job(request.get("jobId"))
        with self._lock:
            if job.status in ("SUBMITTED", "PENDING", "RUNNABLE"):
                self._cancel(job, request.get("reason") or "")
        return {}

    def describe_job_queues(self, request: dict[str, Any]) -> dict[str, Any]:
        wanted = request.get("jobQueues") or []
        queues = [q for q in self.queues.values() if not wanted or q.arn in wanted or q.name in wanted]
        return {"jobQueues": [q.describe() for q in queues]}

    def describe_job_definitions(self, request: dict[str, Any]) -> dict[str, Any]:
        wanted = request.get("jobDefinitions") or []
        name = request.get("jobDefinitionName")
        found = [d for d in self.definitions.values()
                 if (not wanted or d.arn in wanted or f"{d.name}:{d.revision}" in wanted)
                 and (name is None or d.name == name)]
        return {"jobDefinitions": [d.describe() for d in found]}

    # -- local only ---------------------------------------------------------------------------

    def fail_job(self, job_id: str, request: dict[str, Any]) -> dict[str, Any]:
        """End the job's running container (or fail its next attempt before it starts) with the
        given statusReason, container reason and exit code; the retry strategy then applies."""
        job = self._job(job_id)
        outcome = {"statusReason": request.get("statusReason") or ESSENTIAL_EXITED, "reason": request.get("reason"),
                   "exitCode": request.get("exitCode"), "retry": True}
        with self._lock:
            if job.status in ("SUCCEEDED", "FAILED"):
                raise ClientException(f"job {job_id} is already {job.status}")
            if job.process is not None and job.process.poll() is None:
                job.stop_with = outcome
                _kill(job.process)
            else:
                job.fail_next = outcome
        return {"jobId": job_id}

    # -- running containers -------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job_id = self._runnable.get()
            if job_id is None or self._stop.is_set():
                return
            job = self.jobs[job_id]
            try:
                self._run_attempt(job)
            except Exception:  # noqa: BLE001 - one broken job must not take the slot down
                logger.exception("running Batch job %s failed", job.job_name)
                with self._lock:
                    self._finish_attempt(job, {"statusReason": "CannotStartContainerError: local process could not "
                                                               "be started", "retry": True})

    def _run_attempt(self, job: LocalJob) -> None:
        with self._lock:
            if job.status != "RUNNABLE":
                return  # cancelled while waiting
            number = job.attempt_number
            task_id = uuid.uuid4().hex
            prefix = (job.definition.container.get("logConfiguration") or {}).get("options", {}).get(
                "awslogs-stream-prefix", job.definition.name)
            job.current = {"taskArn": f"arn:aws:ecs:{self.context.region}:{self.context.account_id}:task/local/{task_id}",
                           "logStreamName": f"{prefix}/default/{task_id}"}
            self._set_status(job, "STARTING")
            injected, job.fail_next = job.fail_next, None
        if injected is not None:  # e.g. the image could not be pulled: no process at all
            with self._lock:
                self._finish_attempt(job, injected, started=False)
            return
        env = self._container_environment(job, number)
        log = self._open_log(job.current["logStreamName"])
        command = [sys.executable if part == "python" else part for part in job.definition.container.get("command") or []]
        try:
            process = subprocess.Popen(command, env=env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                       stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                       start_new_session=True)
        finally:
            if log is not None:
                log.close()
        with self._lock:
            job.process = process
            started = _now_ms()
            job.started_at = job.started_at or started
            job.current["startedAt"] = started
            self._set_status(job, "RUNNING")
            if job.fail_next is not None:  # injected while the process was being started
                job.stop_with, job.fail_next = job.fail_next, None
                _kill(process)
        duration = (job.timeout or {}).get("attemptDurationSeconds")
        timed_out = False
        try:
            process.wait(timeout=float(duration) if duration else None)
        except subprocess.TimeoutExpired:
            timed_out = True
            _stop_process(process)
        code = process.returncode
        with self._lock:
            job.process = None
            exit_code = code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as docker reports
            if timed_out:
                outcome = {"statusReason": TIMED_OUT, "exitCode": exit_code, "retry": False}
            elif job.stop_with is not None:
                outcome = {"exitCode": exit_code, **job.stop_with}
                if outcome.get("exitCode") is None:
                    outcome["exitCode"] = exit_code
            else:
                outcome = {"statusReason": ESSENTIAL_EXITED, "exitCode": exit_code, "retry": True}
            job.stop_with = None
            self._finish_attempt(job, outcome)

    def _finish_attempt(self, job: LocalJob, outcome: dict[str, Any], started: bool = True) -> None:
        """Record the attempt, then SUCCEEDED, back to RUNNABLE (the retry strategy) or FAILED."""
        now = _now_ms()
        container = {k: v for k, v in job.current.items() if k in ("taskArn", "logStreamName")}
        exit_code = outcome.get("exitCode")
        if exit_code is not None:
            container["exitCode"] = int(exit_code)
        if outcome.get("reason"):
            container["reason"] = outcome["reason"]
        status_reason = outcome.get("statusReason") or ESSENTIAL_EXITED
        attempt = {"container": container, "startedAt": job.current.get("startedAt", now) if started else now,
                   "stoppedAt": now, "statusReason": status_reason}
        job.attempts.append(attempt)
        job.current = {}
        job.status_reason = status_reason
        succeeded = exit_code == 0 and not outcome.get("reason") and status_reason == ESSENTIAL_EXITED
        if succeeded:
            job.stopped_at = now
            self._set_status(job, "SUCCEEDED")
            return
        attempts_allowed = int(job.retry_strategy.get("attempts", 1))
        if (outcome.get("retry", True) and len(job.attempts) < attempts_allowed
                and retry_action(job.retry_strategy, status_reason, outcome.get("reason") or "", exit_code) == "RETRY"):
            logger.info("Batch job %s attempt %d failed (%s): retrying", job.job_name, len(job.attempts), status_reason)
            self._set_status(job, "RUNNABLE")
            self._runnable.put(job.job_id)
            return
        job.stopped_at = now
        self._set_status(job, "FAILED")

    def _cancel(self, job: LocalJob, reason: str) -> None:
        job.status_reason = reason
        job.stopped_at = _now_ms()
        self._set_status(job, "FAILED")

    def _container_environment(self, job: LocalJob, attempt_number: int) -> dict[str, str]:
        env = {k: os.environ[k] for k in _PROCESS_BASICS if k in os.environ}
        env.update({e["name"]: e["value"] for e in job.environment()})
        env.update({
            "AWS_BATCH_JOB_ATTEMPT": str(attempt_number),
            "AWS_BATCH_JQ_NAME": job.queue.name,
            "AWS_BATCH_CE_NAME": str((job.queue.compute_environments or [{}])[0].get("computeEnvironment", ""))
            .rsplit("/", 1)[-1],
        })
        env.update(self.aws_env)  # the job role's stand-in: the emulator's endpoint and credentials
        inherited = os.environ.get("PYTHONPATH")
        env["PYTHONPATH"] = os.pathsep.join([*self.python_path, *([inherited] if inherited else [])])
        return env

    def _open_log(self, stream_name: str):
        if self.log_dir is None:
            return None
        path = self.log_dir / f"{stream_name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path.open("ab")

    def _set_status(self, job: LocalJob, status: str) -> None:
        job.status = status
        logger.info("Batch job %s (%s): %s%s", job.job_name, job.job_id, status,
                    f" ({job.status_reason})" if status in ("FAILED", "SUCCEEDED") and job.status_reason else "")
        if self.deliver is None:
            return
        # A state change event: the detail is the job as DescribeJobs shows it (batch_job_events).
        self.deliver({
            "version": "0", "id": str(uuid.uuid4()), "detail-type": "Batch Job State Change", "source": "aws.batch",
            "account": self.context.account_id,
            "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.context.region, "resources": [job.job_arn], "detail": job.describe(),
        })

    # -- lookups ------------------------------------------------------------------------------

    def _queue(self, identifier: str | None) -> JobQueue:
        for q in self.queues.values():
            if identifier in (q.arn, q.name):
                return q
        raise ClientException(f"Job queue {identifier} does not exist")

    def _definition(self, identifier: str | None) -> JobDefinition:
        for d in self.definitions.values():
            if identifier in (d.arn, d.name, f"{d.name}:{d.revision}"):
                return d
        raise ClientException(f"Job definition {identifier} does not exist")

    def _job(self, job_id: str | None) -> LocalJob:
        with self._lock:
            job = self.jobs.get(job_id or "")
        if job is None:
            raise ClientException(f"Job {job_id} does not exist")
        return job


def _kill(process: subprocess.Popen) -> None:
    """SIGKILL the container's process group (it runs in a session of its own)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_process(process: subprocess.Popen) -> None:
    """What ECS does to stop a task: SIGTERM, then SIGKILL after a grace period."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(STOP_GRACE_SECONDS)
    except (ProcessLookupError, PermissionError):
        pass
    except subprocess.TimeoutExpired:
        _kill(process)
        process.wait()


def _handler_for(batch: LocalBatch) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "jobbridge-local-batch"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if self.path == "/_local/health":
                self._send(200, {"status": "ok"})
            else:
                self._error(404, "UnknownOperationException", f"no route {self.path}")

        def do_POST(self) -> None:  # noqa: N802
            try:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
            except ValueError:
                self._error(400, "ClientException", "the request body is not JSON")
                return
            path = self.path.split("?", 1)[0]
            try:
                local = _LOCAL_FAILURE.match(path)
                if local:
                    self._send(200, batch.fail_job(local["job_id"], body))
                elif path in _OPERATIONS:
                    self._send(200, getattr(batch, _OPERATIONS[path])(body))
                else:
                    self._error(404, "UnknownOperationException", f"{path} is not emulated")
            except ClientException as exc:
                self._error(400, "ClientException", str(exc))
            except Exception as exc:  # noqa: BLE001 - Batch's 500
                logger.exception("local Batch failed on %s", path)
                self._error(500, "ServerException", str(exc))

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, code: str, message: str) -> None:
            # botocore's rest-json parser reads the code from x-amzn-ErrorType (or the body's __type).
            data = json.dumps({"__type": code, "message": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("x-amzn-ErrorType", code)
            self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            logger.debug("%s " + format, self.address_string(), *args)

    return Handler
