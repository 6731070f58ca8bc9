"""/health: are DynamoDB and the queues reachable? 503 naming what is down."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from jobbridge.errors import DependencyUnavailable

from ..deps import DispatcherDep, PrincipalDep, StoreDep
from ..problems import PROBLEM_RESPONSES, problem

router = APIRouter(tags=["health"], responses=PROBLEM_RESPONSES)


class Health(BaseModel):
    status: str
    checks: dict[str, str]


@router.get("/health", response_model=Health, operation_id="get_health", summary="Check DynamoDB and SQS are reachable")
async def health(request: Request, principal: PrincipalDep, store: StoreDep, dispatcher: DispatcherDep):
    checks: dict[str, str] = {}
    try:
        await run_in_threadpool(store.ping)
        checks["dynamodb"] = "ok"
    except DependencyUnavailable as exc:
        checks["dynamodb"] = exc.detail
    for route, error in (await run_in_threadpool(dispatcher.ping)).items():
        checks[f"sqs:{route.value}"] = error or "ok"
    down = sorted(name for name, status in checks.items() if status != "ok")
    if down:
        detail = "unreachable: " + ", ".join(f"{name} ({checks[name]})" for name in down)
        response = problem(503, "unavailable", "Service unavailable", detail, request=request, headers={"Retry-After": "5"})
        return response
    return Health(status="ok", checks=checks)
