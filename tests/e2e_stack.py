"""Support for the e2e tier: the `make run` stack (`python -m jobbridge_local run`) in a subprocess, on free
ports, with a state directory of its own, driven over HTTP like a user would.

``JOBBRIDGE_LOCAL_FUNCTIONS`` narrows which functions the stack runs; the hot-path tests run only
the API and the bridge so the messages stay in their queues for the test to read.
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from jobbridge_local.stack_process import StackProcess, start_stack_process
from timing import budget, wait_for

__all__ = ["RunningStack", "start_stack", "wait_for"]

START_TIMEOUT_S = 90  # before budget()


class RunningStack(StackProcess):
    def client(self, tenant: str = "acme") -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=budget(30),
                            headers={"Authorization": f"Bearer {self.token(tenant)}"})


def start_stack(tmp: Path, functions: str | None = None, extra_env: dict[str, str] | None = None) -> RunningStack:
    env = {**os.environ, **(extra_env or {})}
    if functions:
        env["JOBBRIDGE_LOCAL_FUNCTIONS"] = functions
    return start_stack_process(tmp, env, timeout_s=budget(START_TIMEOUT_S), kind=RunningStack)


