"""The job type registry.

A job type is a plain function ``func(params, ctx) -> result`` registered with its name, a
pydantic model for its params, where it may run and how it retries::

    from pydantic import BaseModel
    from jobbridge.registry import job_type
    from jobbridge.models import Route

    class ResizeParams(BaseModel):
        image: str
        width: int

    @job_type("resize", params=ResizeParams, placements={Route.LAMBDA, Route.PRIVATE}, timeout_s=120)
    def resize(params: ResizeParams, ctx):
        ...
        return {"ok": True}

A type whose runs are short (well under 100 ms) may be declared hot, ``hot_budget_ms=50``: the API
runs it in the submit request itself and answers 200 with the result (jobbridge.inline); it must run
on Lambda only (it runs in the API's own function).

Operators add their own types by naming modules in ``JOBBRIDGE_JOB_MODULES``; importing the
module registers its types. The same registry serves the API (validation, routing), the Lambda
worker, the Batch container and the agent.
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from pydantic import BaseModel, ValidationError

from .errors import InvalidParams, UnknownJobType
from .models import DEFAULT_QUEUE_WAIT_S, DataClassification, Requirements, Route, Target

BUILTIN_MODULES = ("jobbridge.jobtypes.builtin",)
# A hot job holds its submit request: beyond a second it is not hot (API Gateway waits 30 s at most,
# and the caller should not); such work is a cold job.
MAX_HOT_BUDGET_MS = 1000


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: delay = random(0, min(max_s, base_s * 2**(attempt-1)))."""

    base_s: float = 2.0
    max_s: float = 300.0

    def ceiling(self, attempt: int) -> float:
        return min(self.max_s, self.base_s * (2 ** max(0, attempt - 1)))


@dataclass(frozen=True)
class PlacementHint:
    """What a job type infers from its params: extra requirements, a preferred target."""

    requirements: Requirements = field(default_factory=Requirements)
    target: Target | None = None


@dataclass(frozen=True)
class JobType:
    name: str
    func: Callable[[Any, Any], Any]
    params_model: type[BaseModel]
    placements: frozenset[Route]
    default_target: Target = Target.AUTO
    timeout_s: int = 900
    max_attempts: int = 3
    queue_wait_s: int = DEFAULT_QUEUE_WAIT_S  # a submit may choose another, within JobCreate's bounds
    backoff: Backoff = Backoff()
    data_classification: DataClassification = DataClassification.INTERNAL
    description: str = ""
    plan: Callable[[Any], PlacementHint] | None = None
    hot_budget_ms: int | None = None  # hot: run in the submit request, within this budget

    @property
    def is_hot(self) -> bool:
        return self.hot_budget_ms is not None

    def parse_params(self, raw: dict[str, Any]) -> BaseModel:
        try:
            return self.params_model.model_validate(raw)
        except ValidationError as exc:
            errors = [
                {"loc": ["body", "params", *err["loc"]], "msg": err["msg"], "type": err["type"]}
                for err in exc.errors(include_url=False, include_context=False, include_input=False)
            ]
            raise InvalidParams(self.name, errors) from None

    def hint(self, params: BaseModel) -> PlacementHint:
        return self.plan(params) if self.plan else PlacementHint()

    @property
    def allowed_targets(self) -> list[Target]:
        targets = [Target.AUTO]
        if self.placements & {Route.LAMBDA, Route.BATCH}:
            targets.append(Target.PUBLIC)
        if Route.PRIVATE in self.placements:
            targets.append(Target.PRIVATE)
        return targets


class Registry:
    def __init__(self) -> None:
        self._types: dict[str, JobType] = {}
        self._lock = threading.Lock()

    def register(self, jt: JobType) -> JobType:
        with self._lock:
            existing = self._types.get(jt.name)
            if existing is not None and existing.func is not jt.func:
                raise ValueError(f"job type {jt.name!r} is already registered by {existing.func.__module__}")
            self._types[jt.name] = jt
        return jt

    def get(self, name: str) -> JobType:
        try:
            return self._types[name]
        except KeyError:
            raise UnknownJobType(name, self.names()) from None

    def names(self) -> list[str]:
        return sorted(self._types)

    def __iter__(self):
        return iter([self._types[name] for name in self.names()])

    def __len__(self) -> int:
        return len(self._types)


REGISTRY = Registry()


def job_type(
    name: str,
    *,
    params: type[BaseModel],
    placements: Iterable[Route],
    default_target: Target = Target.AUTO,
    timeout_s: int = 900,
    max_attempts: int = 3,
    backoff: Backoff = Backoff(),
    data_classification: DataClassification = DataClassification.INTERNAL,
    plan: Callable[[Any], PlacementHint] | None = None,
    hot_budget_ms: int | None = None,
    registry: Registry | None = None,
) -> Callable[[Callable[[Any, Any], Any]], Callable[[Any, Any], Any]]:
    """Register the decorated function as a job type (see the module docstring)."""
    routes = frozenset(Route(r) for r in placements)
    if not routes:
        raise ValueError(f"job type {name!r} needs at least one placement")
    if hot_budget_ms is not None:
        if routes != {Route.LAMBDA}:
            raise ValueError(f"job type {name!r} is hot: it runs in the API's Lambda, so placements must be {{LAMBDA}}")
        if not 1 <= hot_budget_ms <= MAX_HOT_BUDGET_MS:
            raise ValueError(f"job type {name!r}: hot_budget_ms must be 1..{MAX_HOT_BUDGET_MS}")
    if data_classification.must_stay_private and routes != {Route.PRIVATE}:
        raise ValueError(f"job type {name!r} handles {data_classification.value} data: it may only run on private")

    def decorate(func: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        (REGISTRY if registry is None else registry).register(  # an empty Registry is falsy
            JobType(
                name=name,
                func=func,
                params_model=params,
                placements=routes,
                default_target=default_target,
                timeout_s=timeout_s,
                max_attempts=max_attempts,
                backoff=backoff,
                data_classification=data_classification,
                description=(func.__doc__ or "").strip().split("\n\n")[0],
                plan=plan,
                hot_budget_ms=hot_budget_ms,
            )
        )
        return func

    return decorate


def load_registry(modules: Iterable[str] = ()) -> Registry:
    """Import the built-in and configured job modules (registering their types) once."""
    for module in (*BUILTIN_MODULES, *modules):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ImportError(f"cannot import job module {module!r} (JOBBRIDGE_JOB_MODULES): {exc}") from exc
    return REGISTRY
