"""`make check-openapi`: the published OpenAPI documents generate clients that work.

Starts the `make run` stack (the API only), reads /openapi.json and /agent/openapi.json as a user
would, generates a client from each with openapi-python-client (run from its own venv, given as
``--generator``: it pins an httpx older than ours), then drives the API with the generated tenant
client: submit (202 and a hot 200), read, list, cancel, bulk submit, job types, and a refused
submit parsed as its problem; and the agent client's claim of a job that is not private (404).
Exit 0 when every call answered as documented.

    python scripts/check_openapi.py --generator .venv-openapi/bin/openapi-python-client
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "local"), str(ROOT / "layers" / "core")]

from jobbridge_local.stack_process import start_stack_process  # noqa: E402 (after the path above)

CLIENTS = {"/openapi.json": "jobbridge_openapi_client", "/agent/openapi.json": "jobbridge_agent_openapi_client"}


def generate(generator: Path, document: dict[str, Any], package: str, out: Path) -> None:
    spec, config = out / f"{package}.json", out / f"{package}.yml"
    spec.write_text(json.dumps(document))
    config.write_text(f"project_name_override: {package.replace('_', '-')}\npackage_name_override: {package}\n")
    env = {**os.environ, "PATH": f"{generator.resolve().parent}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff
    done = subprocess.run([str(generator), "generate", "--path", str(spec), "--config", str(config),
                           "--output-path", str(out / package), "--overwrite", "--fail-on-warning"],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"openapi-python-client failed for {package}:\n{done.stdout}\n{done.stderr}")
    sys.path.insert(0, str(out / package))


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"check-openapi: {what}")
    print(f"ok  {what}")


def drive_tenant_client(api_url: str, token: str) -> None:
    client_module = importlib.import_module("jobbridge_openapi_client")
    jobs = {name: importlib.import_module(f"jobbridge_openapi_client.api.jobs.{name}")
            for name in ("submit_job", "get_job", "list_jobs", "cancel_job", "submit_jobs_batch")}
    list_job_types = importlib.import_module("jobbridge_openapi_client.api.job_types.list_job_types")
    models = importlib.import_module("jobbridge_openapi_client.models")

    with client_module.AuthenticatedClient(base_url=api_url, token=token, raise_on_unexpected_status=True) as client:
        accepted = jobs["submit_job"].sync(client=client, body=models.JobCreate.from_dict(
            {"type": "sleep", "params": {"seconds": 60}}), idempotency_key="check-openapi-1")
        check(isinstance(accepted, models.JobAccepted) and accepted.state == models.State.QUEUED,
              "submit_job: 202 parsed as JobAccepted")
        job = jobs["get_job"].sync(client=client, job_id=accepted.job_id)
        check(isinstance(job, models.JobPublic) and job.job_id == accepted.job_id, "get_job: JobPublic")
        page = jobs["list_jobs"].sync(client=client, limit=10)
        check(isinstance(page, models.JobPage) and accepted.job_id in [j.job_id for j in page.items],
              "list_jobs: JobPage with the job")
        cancelled = jobs["cancel_job"].sync(client=client, job_id=accepted.job_id)
        check(isinstance(cancelled, models.JobPublic) and cancelled.state == models.State.CANCELLED,
              "cancel_job: CANCELLED")
        hot = jobs["submit_job"].sync(client=client, body=models.JobCreate.from_dict(
            {"type": "checksum", "params": {"text": "hello"}}))
        check(isinstance(hot, models.JobPublic) and hot.state == models.State.SUCCEEDED,
              "submit_job of a hot type: 200 parsed as the final JobPublic")
        answer = jobs["submit_jobs_batch"].sync(client=client, body=models.JobBatch.from_dict(
            {"jobs": [{"type": "echo"}, {"type": "no_such_type"}]}))
        check(isinstance(answer, models.JobBatchAnswer) and [r.status for r in answer.results] == [202, 422],
              "submit_jobs_batch: one result per item")
        types = list_job_types.sync(client=client)
        check(isinstance(types, models.JobTypeList) and "checksum" in [t.name for t in types.items],
              "list_job_types: JobTypeList")
        refused = jobs["submit_job"].sync_detailed(client=client, body=models.JobCreate.from_dict({"type": "nope"}))
        check(refused.status_code == 422 and isinstance(refused.parsed, models.Problem)
              and refused.parsed.errors[0].loc == ["body", "type"], "a refused submit: its problem, parsed")


def drive_agent_client(api_url: str, token: str, job_id: str) -> None:
    client_module = importlib.import_module("jobbridge_agent_openapi_client")
    claim = importlib.import_module("jobbridge_agent_openapi_client.api.agent.claim_job")
    models = importlib.import_module("jobbridge_agent_openapi_client.models")
    with client_module.AuthenticatedClient(base_url=api_url, token=token) as client:
        refused = claim.sync_detailed(client=client, job_id=job_id, body=models.AgentClaim.from_dict({"attempt": 0}))
    check(refused.status_code == 404 and isinstance(refused.parsed, models.Problem),
          "claim_job of a public job: 404, its problem parsed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--generator", type=Path, required=True, help="the openapi-python-client executable")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobbridge-check-openapi-") as tmp:
        out = Path(tmp)
        env = {**os.environ, "JOBBRIDGE_LOCAL_FUNCTIONS": "ApiFunction"}
        stack = start_stack_process(out / "stack", env)
        try:
            for path, package in CLIENTS.items():
                generate(args.generator, httpx.get(stack.api_url + path, timeout=30).json(), package, out)
                print(f"ok  {path} generates {package}")
            drive_tenant_client(stack.api_url, stack.token("check-openapi"))
            public_job = httpx.post(stack.api_url + "/jobs", json={"type": "echo"}, timeout=30,
                                    headers={"Authorization": f"Bearer {stack.token('check-openapi')}"}).json()
            from jobbridge_local import tokens

            drive_agent_client(stack.api_url, tokens.issue_agent_token("check-openapi", state_dir=stack.state_dir),
                               public_job["job_id"])
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
