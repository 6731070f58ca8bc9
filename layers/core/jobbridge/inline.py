"""Hot job types: run in the submit request itself, within a strict budget.

A type registered with ``hot_budget_ms`` (jobbridge.registry) is run by ``JobService.submit``
before the job is recorded, so the record is written once, already final (SUCCEEDED with the
result, or FAILED with the error), and the API answers 200 with it. The stream sees an INSERT of a
final job, which the bridge does not dispatch (its filter wants QUEUED).

The function runs in a small thread pool and the request waits at most the budget. Past it the
job fails at once as ``HotBudgetExceeded`` (not retryable: the same params take the same time;
such work is a cold job) and the request goes on; the context then reports ``cancelled()`` and its
``sleep`` raises, so a cooperative function stops soon. Python cannot stop a thread that ignores its
context: while such threads fill the pool, hot submits meet the budget waiting and fail the same
fast way rather than pile up.

    submit ─> params valid, route LAMBDA ─> pool: func(params, ctx) ─ within budget ─> SUCCEEDED | FAILED
                                                     └─ past budget ─> FAILED HotBudgetExceeded
          ─> one conditional PutItem of the final record ─> 200
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from .errors import JobBridgeError, JobCancelled, JobFailure, TooLarge
from .limits import check_result
from .models import JobError
from .registry import JobType

log = logging.getLogger("jobbridge.inline")

# A Lambda instance serves one request at a time: a few threads are for functions past their
# budget that ignore their context, so the next hot submit is not stuck behind them.
POOL_THREADS = 4


@lru_cache(maxsize=1)
def _pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="jobbridge-hot")


@dataclass(frozen=True)
class InlineOutcome:
    result: Any = None
    error: JobError | None = None


class InlineContext:
    """The JobContext of a hot run: ``remaining_s`` is the budget left, ``cancelled`` is true once it
    is spent, and ``sleep`` past it raises JobCancelled."""

    attempt = 1

    def __init__(self, job_id: str, budget_s: float) -> None:
        self.job_id = job_id
        self.logger = log
        self._deadline = time.monotonic() + budget_s
        self._stopped = threading.Event()

    def stop(self) -> None:
        self._stopped.set()

    def progress(self, fraction: float, message: str = "") -> None:
        """Nobody watches a job that ends within its request: progress is not recorded."""

    def cancelled(self) -> bool:
        return self._stopped.is_set() or self.remaining_s() <= 0

    def remaining_s(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def sleep(self, seconds: float) -> None:
        if seconds >= self.remaining_s() or self._stopped.wait(seconds):
            self._stopped.wait(self.remaining_s())
            raise JobCancelled(self.job_id)


def run_hot(jt: JobType, params: BaseModel, job_id: str) -> InlineOutcome:
    """Run ``jt`` (hot) on ``params``: its result, or its error; HotBudgetExceeded past the budget."""
    assert jt.hot_budget_ms is not None
    budget_s = jt.hot_budget_ms / 1000
    ctx = InlineContext(job_id, budget_s)
    future = _pool().submit(jt.func, params, ctx)
    try:
        result = future.result(timeout=budget_s)
    except (FutureTimeout, JobCancelled):
        future.cancel()  # still waiting for a thread (the pool busy with stuck ones): it never starts
        ctx.stop()
        return InlineOutcome(error=JobError(
            type="HotBudgetExceeded", retryable=False,
            message=f"{jt.name} ran past its {jt.hot_budget_ms} ms budget (a hot job type runs in the submit "
                    f"request); it was failed rather than hold the request"))
    except JobFailure as exc:
        return InlineOutcome(error=JobError(type=type(exc).__name__, message=str(exc)[:2000], retryable=False))
    except JobBridgeError as exc:
        return InlineOutcome(error=JobError(type=type(exc).__name__, message=str(exc)[:2000], retryable=False))
    except Exception as exc:  # noqa: BLE001 - the job type's own bug: recorded as the job's error
        log.exception("hot job raised", extra={"job_id": job_id, "type": jt.name})
        return InlineOutcome(error=JobError(type=type(exc).__name__, message=str(exc)[:2000], retryable=False))
    try:
        check_result(result)
    except TooLarge as exc:
        return InlineOutcome(error=JobError(type="ResultTooLarge", message=f"the result {exc}"))
    except (TypeError, ValueError) as exc:
        return InlineOutcome(error=JobError(type="ResultNotJSON", message=f"the result is not JSON: {exc}"))
    return InlineOutcome(result=result)
