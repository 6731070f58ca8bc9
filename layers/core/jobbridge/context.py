"""What a job function receives besides its params. The runner implements it for every runtime."""

from __future__ import annotations

import logging
from typing import Protocol, runtime_checkable


@runtime_checkable
class JobContext(Protocol):
    job_id: str
    attempt: int
    logger: logging.Logger | logging.LoggerAdapter

    def progress(self, fraction: float, message: str = "") -> None:
        """Record progress (0.0..1.0). Cheap to call often: the runner coalesces writes."""

    def cancelled(self) -> bool:
        """True once a cancel was requested; the function should stop soon."""

    def remaining_s(self) -> float:
        """Seconds left before the runner stops this attempt as timed out."""

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early (raising JobCancelled) if the job is cancelled."""
