"""The `make run` stack in a subprocess, for the soak: free ports, a state directory of its own, and
faults on in every process it starts (the jobbridge_faults bootstrap on PYTHONPATH).

Faults are injected into the code under test only: the AWS emulator (moto server), the launcher that
creates the resources and the local Batch API (the emulated service itself) are skipped
(JOBBRIDGE_FAULTS_SKIP); the emulated Lambda pollers do get them, so an SQS receive can deliver a
message twice, as SQS may.
"""

from __future__ import annotations

import os
from pathlib import Path

from jobbridge_local.stack_process import StackProcess, start_stack_process

ROOT = Path(__file__).resolve().parents[1]
FAULTS_BOOT = ROOT / "local" / "jobbridge_faults" / "boot"
START_TIMEOUT_S = 120
# The emulators and the launcher: never faulted (see jobbridge_faults.DEFAULT_SKIP).
SKIP = r"moto[/.]?server|jobbridge_local(/__main__\.py)?\s+(run|resources|token|batch)\b|local_batch"


class SoakStack(StackProcess):
    # Its aws() clients are built here, in the harness's process, which has no fault bootstrap.

    @property
    def logs(self) -> Path:
        return self.state_dir / "logs"

    def api_pid(self) -> int:
        """The stack's uvicorn (the API the agents and the soak's clients call): the child of the
        stack process whose command line runs it."""
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError, IndexError):
                continue  # gone meanwhile, or not ours to read
            if ppid == self.process.pid and b"uvicorn" in cmdline:
                return int(entry.name)
        raise RuntimeError("the stack's API process was not found")


def start(state_dir: Path, *, faults: str, seed: int, parameters: dict[str, str], env: dict[str, str]) -> SoakStack:
    python_path = [str(FAULTS_BOOT), str(ROOT / "local")] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
    environ = {
        **os.environ,
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
    return start_stack_process(state_dir, environ, timeout_s=START_TIMEOUT_S, kind=SoakStack)
