"""The `make run` stack in a subprocess, for the soak: free ports, a state directory of its own, and
faults on in every process it starts (the jobbridge_faults bootstrap on PYTHONPATH).

Faults are injected into the code under test only: the AWS emulator (moto server), the launcher that
creates the resources and the local Batch API (the emulated service itself) are skipped
(JOBBRIDGE_FAULTS_SKIP); the emulated Lambda pollers do get them, so an SQS receive can deliver a
message twice, as SQS may.
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
from typing import Any

import boto3
import httpx

from jobbridge_local import tokens
from jobbridge_local.motoserver import free_port

ROOT = Path(__file__).resolve().parents[1]
FAULTS_BOOT = ROOT / "local" / "jobbridge_faults" / "boot"
START_TIMEOUT_S = 120
# The emulators and the launcher: never faulted (see jobbridge_faults.DEFAULT_SKIP).
SKIP = r"moto[/.]server|jobbridge_local(/__main__\.py)?\s+(run|resources|token|batch)\b|local_batch"


@dataclass
class SoakStack:
    api_url: str
    endpoint_url: str
    state_dir: Path
    info: dict[str, Any]
    process: subprocess.Popen

    def token(self, tenant: str) -> str:
        return tokens.issue_token(tenant, state_dir=self.state_dir)

    def aws(self, service: str) -> Any:
        # The harness's own clients: built here, in a process without the fault bootstrap.
        return boto3.session.Session().client(service, endpoint_url=self.endpoint_url, region_name="us-east-1",
                                              aws_access_key_id="testing", aws_secret_access_key="testing")

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"


def start(state_dir: Path, *, faults: str, seed: int, parameters: dict[str, str], env: dict[str, str]) -> SoakStack:
    state_dir.mkdir(parents=True, exist_ok=True)
    aws_port, api_port = free_port(), free_port()
    python_path = [str(FAULTS_BOOT), str(ROOT / "local")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    environ = {
        **os.environ,
        "JOBBRIDGE_AWS_PORT": str(aws_port), "JOBBRIDGE_API_PORT": str(api_port), "JOBBRIDGE_STATE_DIR": str(state_dir),
        "JOBBRIDGE_LOCAL_PARAMS": ",".join(f"{k}={v}" for k, v in parameters.items()),
        "PYTHONPATH": os.pathsep.join(python_path),
        "JOBBRIDGE_FAULTS": faults, "JOBBRIDGE_FAULTS_SEED": str(seed), "JOBBRIDGE_FAULTS_DIR": str(state_dir / "faults"),
        "JOBBRIDGE_FAULTS_SKIP": SKIP,
        **env,
    }
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        environ.pop(name, None)
    if not faults:
        environ.pop("JOBBRIDGE_FAULTS")
    log = open(state_dir / "stack.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "jobbridge_local", "run", "--quiet"], cwd=ROOT, env=environ,
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    stack_file = state_dir / "stack.json"
    api_url = f"http://127.0.0.1:{api_port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the stack exited with {process.returncode}:\n{(state_dir / 'stack.log').read_text()[-4000:]}")
        if stack_file.is_file():
            try:
                if httpx.get(api_url + "/openapi.json", timeout=2).status_code == 200:
                    info = json.loads(stack_file.read_text())
                    return SoakStack(api_url, f"http://127.0.0.1:{aws_port}", state_dir, info, process)
            except (httpx.HTTPError, ValueError):
                pass
        time.sleep(0.3)
    stop(process)
    raise RuntimeError(f"the stack did not start in {START_TIMEOUT_S}s:\n{(state_dir / 'stack.log').read_text()[-4000:]}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
