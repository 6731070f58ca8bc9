"""The queue message: a pointer to a job, never its params (docs/CONTRACTS.md)."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field

from .models import Route


class JobMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    job_id: str = Field(min_length=1, max_length=64)
    route: Route
    attempt: int = Field(ge=0)
    correlation_id: str | None = None
    timeout_s: int | None = None
    expected_runtime_s: int | None = None
    returns: int = Field(default=0, ge=0)  # fresh copies sent by consumers through our outages (queues.send_again)

    @property
    def time_needed_s(self) -> int:
        """How long the job may run: its expected runtime if known, bounded by its timeout."""
        candidates = [v for v in (self.expected_runtime_s, self.timeout_s) if v]
        return min(candidates) if candidates else 0


def job_id_of(body: str) -> str | None:
    """The job id of a message, however malformed the rest of it is (the dead-letter path)."""
    try:
        value = json.loads(body).get("job_id")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, str) and value else None


def attempt_of(body: str) -> int | None:
    """The attempt a message names (the dead-letter path applies a letter to that attempt only),
    or None when it names none that could be ours."""
    try:
        value = json.loads(body).get("attempt")
    except (ValueError, AttributeError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
