"""Support for the e2e tier: the `make run` stack (`python -m jobbridge_local run`) in a subprocess, on free
ports, with a state directory of its own, driven over HTTP like a user would.

``JOBBRIDGE_LOCAL_FUNCTIONS`` narrows which functions the stack runs; the hot-path tests run only
the API and the bridge so the messages stay in their queues for the test to read.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable

import httpx

from jobbridge_local.stack_process import StackProcess, start_stack_process

START_TIMEOUT_S = 90


class RunningStack(StackProcess):
    def client(self, tenant: str = "acme") -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30,
                            headers={"Authorization": f"Bearer {self.token(tenant)}"})


def start_stack(tmp: Path, functions: str | None = None, extra_env: dict[str, str] | None = None) -> RunningStack:
    env = {**os.environ, **(extra_env or {})}
    if functions:
        env["JOBBRIDGE_LOCAL_FUNCTIONS"] = functions
    return start_stack_process(tmp, env, timeout_s=START_TIMEOUT_S, kind=RunningStack)


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
