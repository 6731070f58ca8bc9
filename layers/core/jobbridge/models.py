"""The job's model families.

``JobCreate`` is what a client may send; ``Job`` is the stored record (server-owned fields
included); ``JobPublic``/``JobPage`` are what the API shows. A client can never set state,
tenant, attempt, lease or timestamps: ``JobCreate`` forbids unknown fields, so such a body is a
422 that names the field rather than a silently ignored one.
"""

from __future__ import annotations

import re
from enum import Enum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class State(str, Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset({State.SUCCEEDED, State.FAILED, State.CANCELLED})
ACTIVE_STATES = frozenset({State.QUEUED, State.RUNNING})


class Target(str, Enum):
    """Where a request asks its job to run."""

    PUBLIC = "public"
    PRIVATE = "private"
    AUTO = "auto"


class Route(str, Enum):
    """Where a job runs: fixed at submit, never changed."""

    LAMBDA = "lambda"
    BATCH = "batch"
    PRIVATE = "private"

    @property
    def is_public(self) -> bool:
        return self is not Route.PRIVATE


class DataClassification(str, Enum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"

    @property
    def rank(self) -> int:
        return _CLASS_RANK[self]

    @property
    def must_stay_private(self) -> bool:
        return self.rank >= _CLASS_RANK[DataClassification.CONFIDENTIAL]


_CLASS_RANK = {
    DataClassification.PUBLIC: 0,
    DataClassification.INTERNAL: 1,
    DataClassification.CONFIDENTIAL: 2,
    DataClassification.RESTRICTED: 3,
}


class Requirements(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gpu: bool = False
    memory_mb: int | None = Field(default=None, ge=128, le=1_048_576)
    expected_runtime_s: int | None = Field(default=None, ge=1, le=14 * 24 * 3600)


MIN_QUEUE_WAIT_S = 60
# The longest a job may wait: the route queues retain messages this long (template.yaml), and the
# sweeper re-sends a waiting job's message every REDISPATCH_AFTER_S anyway.
MAX_QUEUE_WAIT_S = 7 * 86400
DEFAULT_QUEUE_WAIT_S = 3 * 86400


class JobCreate(BaseModel):
    """The body of ``POST /jobs``."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"type": "transcode", "params": {"video_id": "v42", "resolution": "8K"}},
        {"type": "sleep", "params": {"seconds": 5, "steps": 5}, "target": "public", "priority": 10},
    ]})

    type: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")
    params: dict[str, Any] = Field(default_factory=dict)
    target: Target = Target.AUTO
    priority: int = Field(default=0, ge=-100, le=100, description="Higher runs first where the route supports it")
    requirements: Requirements = Field(default_factory=Requirements)
    data_classification: DataClassification | None = Field(
        default=None, description="Defaults to the job type's classification"
    )
    queue_wait_s: int | None = Field(
        default=None, ge=MIN_QUEUE_WAIT_S, le=MAX_QUEUE_WAIT_S,
        description="How long the job may wait QUEUED before it fails as QueueWaitExpired (seconds; "
                    "defaults to the job type's; counted afresh each time it is queued)")


class Progress(BaseModel):
    fraction: float = Field(ge=0.0, le=1.0)
    message: str = Field(default="", max_length=1024)


class JobError(BaseModel):
    type: str
    message: str
    retryable: bool = False
    attempt: int | None = None


class HistoryEntry(BaseModel):
    at: str
    state: State
    event: str
    attempt: int | None = None  # the attempt the entry is about, when the writer knew it
    detail: str | None = None


class Job(BaseModel):
    """The stored record: one DynamoDB item per job."""

    job_id: str
    tenant: str
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    route: Route
    state: State
    priority: int = 0
    requirements: Requirements = Field(default_factory=Requirements)
    data_classification: DataClassification = DataClassification.INTERNAL
    attempt: int = 0
    max_attempts: int = 3
    releases: int = 0  # attempts handed back unfinished by a worker shutting down (they spend nothing)
    queue_wait_s: int = DEFAULT_QUEUE_WAIT_S
    queue_deadline: int | None = None  # epoch seconds: past it, a job still QUEUED fails (QueueWaitExpired)
    timeout_s: int = 900
    lease_owner: str | None = None
    lease_expires_at: str | None = None
    cancel_requested: bool = False
    progress: Progress | None = None
    result: Any = None
    error: JobError | None = None
    idempotency_key: str | None = None
    request_hash: str | None = None
    correlation_id: str | None = None
    created_at: str
    dispatched_at: str | None = None
    not_before: str | None = None
    started_at: str | None = None
    heartbeat_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None
    version: int = 1
    expires_at: int | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    history_dropped: int = 0  # entries dropped between the first and the newest kept (jobbridge.limits)

    @property
    def attempt_budget(self) -> int:
        """The attempt number up to which the job may still be retried: ``max_attempts`` runs, not
        counting the attempts released by a worker's shutdown (each release keeps the attempt
        number for the fence, so the next claim makes attempt + 1 without spending a run)."""
        return self.max_attempts + self.releases


class JobPublic(BaseModel):
    """A job as its tenant sees it."""

    job_id: str
    type: str
    state: State
    route: Route
    params: dict[str, Any]
    priority: int
    requirements: Requirements
    data_classification: DataClassification
    attempt: int
    max_attempts: int
    cancel_requested: bool
    progress: Progress | None = None
    result: Any = None
    error: JobError | None = None
    idempotency_key: str | None = None
    correlation_id: str | None = None
    created_at: str
    dispatched_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
    history_dropped: int = Field(default=0, description="Entries left out of history after its first one: it keeps "
                                                        "the first entry and the newest 40")

    @classmethod
    def of(cls, job: Job) -> "JobPublic":
        data = job.model_dump(include=set(cls.model_fields))
        for entry in data["history"]:
            if entry.get("detail"):
                entry["detail"] = (worker_kind(entry["detail"]) if entry["event"] == "claimed"
                                   else without_worker_identities(entry["detail"]))
        if data.get("error"):
            data["error"]["message"] = without_worker_identities(data["error"]["message"])
        return cls.model_validate(data)


# Lease owners name workers: agent:<IAM user id or token agent_id>, batch:<AWS Batch job id>, lambda.
# They are operators' identities, in the record and the logs; a tenant is told the kind of worker only.
WORKER_KINDS = ("agent", "batch", "lambda")
_WORKER_IDENTITY = re.compile(r"\b(agent|batch|lambda):[^\s,;()]+")


def worker_kind(owner: str) -> str:
    """The kind of worker a lease owner is ("agent", "batch", "lambda"), or "worker"."""
    kind = owner.split(":", 1)[0]
    return kind if kind in WORKER_KINDS else "worker"


def without_worker_identities(text: str) -> str:
    """``text`` with every lease owner in it replaced by its kind ("no heartbeat from agent since ...")."""
    return _WORKER_IDENTITY.sub(r"\1", text)


class JobAccepted(BaseModel):
    """The 202 body of ``POST /jobs``."""

    job_id: str
    state: State
    route: Route
    created_at: str
    location: str


class JobSummary(BaseModel):
    job_id: str
    type: str
    state: State
    route: Route
    attempt: int
    progress: Progress | None = None
    created_at: str
    finished_at: str | None = None

    @classmethod
    def of(cls, job: Job) -> "JobSummary":
        return cls.model_validate(job.model_dump(include=set(cls.model_fields)))


class JobPage(BaseModel):
    items: list[JobSummary]
    next_cursor: str | None = None


# --- the /agent routes: what an on-prem agent sends and gets -----------------------------------


class AgentClaim(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"attempt": 0, "lease_s": 60}]})

    attempt: int = Field(ge=0, description="The attempt count in the queue message (fences stale duplicates)")
    lease_s: int = Field(default=60, ge=10, le=43_200)
    claim_token: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_-]{16,64}$",
        description="Unique to this agent's run of this message, the same on every try: a claim whose answer "
                    "was lost is then answered as made (200) when tried again, instead of refused")


class AgentHeartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"attempt": 1, "lease_s": 60, "progress": {"fraction": 0.5, "message": "encode"}}]})

    attempt: int = Field(ge=1)
    lease_s: int = Field(default=60, ge=10, le=43_200)
    progress: Progress | None = None


class AgentComplete(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"attempt": 1, "result": {"output": "renditions/v42/4K.mp4"}}]})

    attempt: int = Field(ge=1)
    result: Any = None


class AgentFail(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"attempt": 1, "error": {"type": "DiskFull", "message": "no space left on /scratch", "retryable": True}}]})

    attempt: int = Field(ge=1)
    error: JobError


class AgentAttempt(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"attempt": 1}]})

    attempt: int = Field(ge=1)


class AgentJob(BaseModel):
    """A claimed job as the agent needs it to run: the params travel only behind a claim."""

    job_id: str
    type: str
    params: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout_s: int
    lease_owner: str | None = None
    lease_expires_at: str | None = None
    cancel_requested: bool = False
    correlation_id: str | None = None
    state: State
    tenant: str
    route: Route
    created_at: str

    @classmethod
    def of(cls, job: "Job") -> "AgentJob":
        return cls.model_validate(job.model_dump(include=set(cls.model_fields)))


class AgentBeatAnswer(BaseModel):
    lease_owned: bool
    cancel_requested: bool
    lease_expires_at: str | None = None
    state: State | None = None
