"""/job-types: what a caller may submit."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from jobbridge.models import DataClassification, Route, Target

from ..deps import PrincipalDep, RegistryDep
from ..problems import PROBLEM_RESPONSES

router = APIRouter(prefix="/job-types", tags=["job types"], responses=PROBLEM_RESPONSES)


class JobTypeInfo(BaseModel):
    name: str
    description: str
    placements: list[Route]
    allowed_targets: list[Target]
    default_target: Target
    data_classification: DataClassification
    timeout_s: int
    max_attempts: int
    hot_budget_ms: int | None = Field(default=None, description="Set for a hot type: POST /jobs runs it in the "
                                                                "request and answers 200 with the job, or fails it "
                                                                "past this budget")
    params_schema: dict[str, Any]


class JobTypeList(BaseModel):
    items: list[JobTypeInfo]


@router.get("", response_model=JobTypeList, operation_id="list_job_types", summary="The job types a caller may submit")
async def list_job_types(principal: PrincipalDep, registry: RegistryDep) -> JobTypeList:
    return JobTypeList(
        items=[
            JobTypeInfo(
                name=jt.name,
                description=jt.description,
                placements=sorted(jt.placements, key=lambda r: r.value),
                allowed_targets=jt.allowed_targets,
                default_target=jt.default_target,
                data_classification=jt.data_classification,
                timeout_s=jt.timeout_s,
                max_attempts=jt.max_attempts,
                hot_budget_ms=jt.hot_budget_ms,
                params_schema=jt.params_model.model_json_schema(),
            )
            for jt in registry
        ]
    )
