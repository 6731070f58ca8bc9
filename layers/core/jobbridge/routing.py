"""Where a job runs. Rules, in order (docs/ARCHITECTURE.md#routing):

1. Data classified confidential or restricted never leaves ``private``.
2. ``target`` (or, for ``auto``, the job type's preference from its params, then its default)
   picks public or private; a target the job type does not allow is refused with the reason.
3. Public work that needs a GPU, or more time or memory than the deployed Lambda worker has
   (template parameters WorkerTimeout and WorkerMemorySize, less the worker's start margin; at most
   Lambda's 15 minutes and 10,240 MB) goes to ``batch``; other public work goes to ``lambda``.
   CPU work on Batch runs on Fargate, so it needs at most Fargate's largest size (120 GiB).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from .errors import PlacementNotAllowed
from .models import DataClassification, JobCreate, Requirements, Route, Target
from .registry import JobType

LAMBDA_MAX_RUNTIME_S = 900  # https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
LAMBDA_MAX_MEMORY_MB = 10_240
# The Lambda worker starts a job only with this much of its invocation to spare (jobbridge.worker).
WORKER_START_MARGIN_S = 10.0
# Fargate's largest task: 16 vCPU, 120 GiB (jobbridge.batch.fargate_size has the table).
FARGATE_MAX_MEMORY_MB = 122_880


@dataclass(frozen=True)
class LambdaWorker:
    """The deployed WorkerFunction: its Timeout and MemorySize (template parameters WorkerTimeout
    and WorkerMemorySize, in Settings); Lambda's limits by default."""

    timeout_s: int = LAMBDA_MAX_RUNTIME_S
    memory_mb: int = LAMBDA_MAX_MEMORY_MB

    @property
    def runtime_s(self) -> float:
        """The longest job it will start."""
        return self.timeout_s - WORKER_START_MARGIN_S


@dataclass(frozen=True)
class Placement:
    route: Route
    requirements: Requirements
    data_classification: DataClassification


def merge_requirements(asked: Requirements, inferred: Requirements) -> Requirements:
    def larger(a: int | None, b: int | None) -> int | None:
        return max(x for x in (a, b) if x is not None) if (a is not None or b is not None) else None

    return Requirements(
        gpu=asked.gpu or inferred.gpu,
        memory_mb=larger(asked.memory_mb, inferred.memory_mb),
        expected_runtime_s=larger(asked.expected_runtime_s, inferred.expected_runtime_s),
    )


def needs_batch(req: Requirements, worker: LambdaWorker = LambdaWorker()) -> str | None:
    """Why the deployed Lambda worker cannot run this, or None if it can."""
    if req.gpu:
        return "it needs a GPU"
    if req.expected_runtime_s is not None and req.expected_runtime_s > worker.runtime_s:
        return (f"its expected runtime {req.expected_runtime_s}s is past what the Lambda worker runs "
                f"(WorkerTimeout {worker.timeout_s}s less {WORKER_START_MARGIN_S:.0f}s)")
    if req.memory_mb is not None and req.memory_mb > worker.memory_mb:
        return f"it needs {req.memory_mb} MB, past the Lambda worker's WorkerMemorySize {worker.memory_mb} MB"
    return None


def choose_placement(jt: JobType, request: JobCreate, params: BaseModel,
                     worker: LambdaWorker = LambdaWorker()) -> Placement:
    hint = jt.hint(params)
    req = merge_requirements(request.requirements, hint.requirements)
    asked = request.data_classification or jt.data_classification
    # The job type's classification is a floor: a request may raise it, never lower it.
    classification = asked if asked.rank >= jt.data_classification.rank else jt.data_classification

    if classification.must_stay_private:
        if request.target is Target.PUBLIC:
            raise PlacementNotAllowed(
                f"data classified {classification.value} never leaves private; target 'public' is not allowed"
            )
        if Route.PRIVATE not in jt.placements:
            raise PlacementNotAllowed(
                f"data classified {classification.value} must run on private, "
                f"and job type {jt.name!r} cannot run there (allowed: {_names(jt)})",
                field="data_classification",
            )
        return Placement(Route.PRIVATE, req, classification)

    target = request.target
    if target is Target.AUTO:
        target = hint.target or jt.default_target
    if target is Target.PRIVATE:
        if Route.PRIVATE not in jt.placements:
            raise PlacementNotAllowed(f"job type {jt.name!r} does not allow target 'private' (allowed: {_names(jt)})")
        return Placement(Route.PRIVATE, req, classification)
    if target is Target.PUBLIC:
        return Placement(_public_route(jt, req, worker), req, classification)
    # auto with no preference: public if the type can run there, else private.
    try:
        return Placement(_public_route(jt, req, worker), req, classification)
    except PlacementNotAllowed:
        if Route.PRIVATE in jt.placements:
            return Placement(Route.PRIVATE, req, classification)
        raise


def _public_route(jt: JobType, req: Requirements, worker: LambdaWorker) -> Route:
    public = jt.placements & {Route.LAMBDA, Route.BATCH}
    if not public:
        raise PlacementNotAllowed(f"job type {jt.name!r} does not allow target 'public' (allowed: {_names(jt)})")
    reason = needs_batch(req, worker)
    if reason:
        if Route.BATCH in public:
            if not req.gpu and req.memory_mb is not None and req.memory_mb > FARGATE_MAX_MEMORY_MB:
                raise PlacementNotAllowed(
                    f"it needs {req.memory_mb} MB; CPU work in the public cloud runs on Fargate, at most "
                    f"{FARGATE_MAX_MEMORY_MB} MB", field="requirements")
            return Route.BATCH
        raise PlacementNotAllowed(
            f"job type {jt.name!r} can only run on Lambda in the public cloud, and {reason}", field="requirements"
        )
    return Route.LAMBDA if Route.LAMBDA in public else Route.BATCH


def _names(jt: JobType) -> str:
    return ", ".join(t.value for t in jt.allowed_targets if t is not Target.AUTO)
