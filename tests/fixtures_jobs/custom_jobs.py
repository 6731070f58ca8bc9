"""An operator's job module, as JOBBRIDGE_JOB_MODULES would name it: importing it registers
``custom_resize`` in the process registry."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from jobbridge.models import Route
from jobbridge.registry import job_type


class ResizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    image: str = Field(min_length=1)
    width: int = Field(gt=0, le=10_000)


@job_type("custom_resize", params=ResizeParams, placements={Route.LAMBDA, Route.PRIVATE}, timeout_s=120)
def custom_resize(params: ResizeParams, ctx: Any) -> dict[str, Any]:
    """Resize an image (the operator's own job type)."""
    return {"image": params.image, "width": params.width}
