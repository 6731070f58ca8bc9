"""The test suite's one time budget.

Every wait in the tests (a job reaching a state, a stack starting, "answered quickly") is a budget in
seconds on an unloaded 2-core machine, multiplied by ``JOBBRIDGE_TEST_TIME_SCALE`` (default 1). A slow
or busy machine raises it (``JOBBRIDGE_TEST_TIME_SCALE=3 make test``); nothing else in the tests
depends on how fast the machine is. The budgets are generous upper bounds that only a hang or a real
regression exceeds: a test never asserts how fast something is.
"""

from __future__ import annotations

import os
import time
from typing import Callable, TypeVar

T = TypeVar("T")


def time_scale() -> float:
    value = os.environ.get("JOBBRIDGE_TEST_TIME_SCALE") or "1"
    try:
        scale = float(value)
    except ValueError:
        raise ValueError(f"JOBBRIDGE_TEST_TIME_SCALE must be a number >= 1, not {value!r}") from None
    if scale < 1:
        raise ValueError(f"JOBBRIDGE_TEST_TIME_SCALE must be a number >= 1, not {value!r}")
    return scale


def budget(seconds: float) -> float:
    """``seconds`` on an unloaded machine, scaled for this one."""
    return seconds * time_scale()


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, *, interval: float = 0.1,
             what: str = "condition") -> T:
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError after
    ``budget(timeout)`` seconds."""
    limit = budget(timeout)
    deadline = time.monotonic() + limit
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {limit:g}s waiting for {what}")
        time.sleep(interval)
