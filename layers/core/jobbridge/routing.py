"""Where a job runs. Rules, in order (docs/ARCHITECTURE.md#routing):

1. Data classified confidential or restricted never leaves ``private``.
2. ``target`` (or, for ``auto``, the job type's preference from its params, then its default)
   picks public or private; a target the job type does not allow is refused with the reason.
3. Public work that needs a GPU, more than Lambda's 15 minutes or 10,240 MB goes to ``batch``;
   other public work goes to ``lambda``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from .errors import PlacementNotAllowed
from .models import DataClassification, JobCreate, Requirements, Route, Target
from .registry import JobType

LAMBDA_MAX_RUNTIME_S = 900  # https://docs.aws.amazon.com/lambda/latest/dg/gettingstarted-limits.html
LAMBDA_MAX_MEMORY_MB = 10_240


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


def needs_batch(req: Requirements) -> str | None:
    """Why Lambda cannot run this, or None if it can."""
    if req.gpu:
        return "it needs a GPU"
    if req.expected_runtime_s is not None and req.expected_runtime_s > LAMBDA_MAX_RUNTIME_S:
        return f"its expected runtime {req.expected_runtime_s}s is past Lambda's {LAMBDA_MAX_RUNTIME_S}s"
    if req.memory_mb is not None and req.memory_mb > LAMBDA_MAX_MEMORY_MB:
        return f"it needs {req.memory_mb} MB, past Lambda's {LAMBDA_MAX_MEMORY_MB} MB"
    return None


def choose_placement(jt: JobType, request: JobCreate, params: BaseModel) -> Placement:
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
        return Placement(_public_route(jt, req), req, classification)
    # auto with no preference: public if the type can run there, else private.
    try:
        return Placement(_public_route(jt, req), req, classification)
    except PlacementNotAllowed:
        if Route.PRIVATE in jt.placements:
            return Placement(Route.PRIVATE, req, classification)
        raise


def _public_route(jt: JobType, req: Requirements) -> Route:
    public = jt.placements & {Route.LAMBDA, Route.BATCH}
    if not public:
        raise PlacementNotAllowed(f"job type {jt.name!r} does not allow target 'public' (allowed: {_names(jt)})")
    reason = needs_batch(req)
    if reason:
        if Route.BATCH in public:
            return Route.BATCH
        raise PlacementNotAllowed(
            f"job type {jt.name!r} can only run on Lambda in the public cloud, and {reason}", field="requirements"
        )
    return Route.LAMBDA if Route.LAMBDA in public else Route.BATCH


def _names(jt: JobType) -> str:
    return ", ".join(t.value for t in jt.allowed_targets if t is not Target.AUTO)
