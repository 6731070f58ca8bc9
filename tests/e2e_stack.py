"""Support for the e2e tier: the `make run` stack (`python -m jobbridge_local run`) in a subprocess, on free
ports, with a state directory of its own, driven over HTTP like a user would.

``JOBBRIDGE_LOCAL_FUNCTIONS`` narrows which functions the stack runs; the hot-path tests run only
the API and the bridge so the messages stay in their queues for the test to read.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import boto3
import httpx

from jobbridge_local import tokens
from jobbridge_local.motoserver import free_port

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 90


@dataclass
class RunningStack:
    api_url: str
    endpoint_url: str
    state_dir: Path
    info: dict[str, Any]
    process: subprocess.Popen

    def token(self, tenant: str, **claims: Any) -> str:
        return tokens.issue_token(tenant, state_dir=self.state_dir, extra_claims=claims or None)

    def client(self, tenant: str = "acme") -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30,
                            headers={"Authorization": f"Bearer {self.token(tenant)}"})

    def aws(self, service: str):
        return boto3.client(service, endpoint_url=self.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def queue_url(self, logical_id: str) -> str:
        return self.info["queues"][logical_id] if "queues" in self.info else self.info["resources"]["queues"][logical_id]


def start_stack(tmp: Path, functions: str | None = None, extra_env: dict[str, str] | None = None) -> RunningStack:
    aws_port, api_port = free_port(), free_port()
    env = {**os.environ, "JOBBRIDGE_AWS_PORT": str(aws_port), "JOBBRIDGE_API_PORT": str(api_port),
           "JOBBRIDGE_STATE_DIR": str(tmp), **(extra_env or {})}
    if functions:
        env["JOBBRIDGE_LOCAL_FUNCTIONS"] = functions
    log = open(tmp / "stack.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "jobbridge_local", "run", "--quiet"], cwd=ROOT, env=env,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack_file = tmp / "stack.json"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the stack exited with {process.returncode}:\n{(tmp / 'stack.log').read_text()[-4000:]}")
        if stack_file.is_file():
            info = json.loads(stack_file.read_text())
            api_url = f"http://127.0.0.1:{api_port}"
            try:
                if httpx.get(api_url + "/openapi.json", timeout=2).status_code == 200:
                    return RunningStack(api_url, f"http://127.0.0.1:{aws_port}", tmp, info, process)
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    stop_stack(process)
    raise RuntimeError(f"the stack did not start in {START_TIMEOUT_S}s:\n{(tmp / 'stack.log').read_text()[-4000:]}")


def stop_stack(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.2, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
