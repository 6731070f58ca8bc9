"""The `make run` stack as a child process, on free ports, with a state directory of its own: what
the e2e tests, the soak and the bench start, driven over HTTP like a user would.

    running = start_stack_process(tmp_dir, dict(os.environ))
    ...
    running.stop()
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
from typing import IO, Any, TypeVar

from . import paths, tokens
from .motoserver import free_port, is_answering

REGION = "us-east-1"


@dataclass
class StackProcess:
    process: subprocess.Popen
    api_url: str
    endpoint_url: str
    state_dir: Path
    info: dict[str, Any]
    log: IO[str]

    def token(self, tenant: str, **claims: Any) -> str:
        return tokens.issue_token(tenant, state_dir=self.state_dir, extra_claims=claims or None)

    def aws(self, service: str) -> Any:
        # A session of its own: the default session may be shared with code under test.
        import boto3

        return boto3.session.Session().client(service, endpoint_url=self.endpoint_url, region_name=REGION,
                                              aws_access_key_id="testing", aws_secret_access_key="testing")

    def queue_url(self, logical_id: str) -> str:
        return self.info["queues"][logical_id]

    def log_tail(self, chars: int = 4000) -> str:
        return (self.state_dir / "stack.log").read_text()[-chars:]

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM (the stack stops its children in order), then SIGKILL to the whole group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log.close()


S = TypeVar("S", bound=StackProcess)


def start_stack_process(state_dir: Path, environ: dict[str, str], *, timeout_s: float = 120,
                        python: str = sys.executable, kind: type[S] = StackProcess) -> S:  # type: ignore[assignment]
    """Start ``python -m jobbridge_local run --quiet`` with ``environ`` (plus free ports and
    ``state_dir``) and return once its API answers; the stack's log is ``state_dir/stack.log``."""
    state_dir.mkdir(parents=True, exist_ok=True)
    aws_port, api_port = free_port(), free_port()
    env = {**environ, "JOBBRIDGE_AWS_PORT": str(aws_port), "JOBBRIDGE_API_PORT": str(api_port),
           "JOBBRIDGE_STATE_DIR": str(state_dir)}
    log = open(state_dir / "stack.log", "w")
    process = subprocess.Popen([python, "-m", "jobbridge_local", "run", "--quiet"], cwd=paths.project_root(),
                               env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    running = kind(process, f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{aws_port}", state_dir, {}, log)
    stack_file = state_dir / paths.STACK_FILE
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.close()
            raise RuntimeError(f"the stack exited with {process.returncode}:\n{running.log_tail()}")
        if stack_file.is_file() and is_answering(running.api_url + "/openapi.json", timeout=2):
            running.info = json.loads(stack_file.read_text())
            return running
        time.sleep(0.2)
    running.stop()
    raise RuntimeError(f"the stack did not start in {timeout_s:.0f}s:\n{running.log_tail()}")
