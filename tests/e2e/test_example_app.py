"""examples/fastapi_hot_cold runs as its README says, against the `make run` stack: its hot endpoint
answers 202 and the transcode it handed to jobbridge in process runs to the end (Batch for 8K, the
on-prem agent for 720p), seen from the app and through the jobbridge API with the Python client."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from e2e_stack import RunningStack, start_stack, wait_for
from jobbridge_client import Client
from jobbridge_local.motoserver import free_port, is_answering
from timing import budget

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("example-stack"))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def shop(stack: RunningStack) -> Iterator[httpx.Client]:
    """The example app under uvicorn, as its README runs it."""
    port = free_port()
    env = {**os.environ, "JOBBRIDGE_STACK_FILE": str(stack.state_dir / "stack.json")}
    log = open(stack.state_dir / "example-app.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "uvicorn", "app:app", "--app-dir", "examples/fastapi_hot_cold",
                                "--port", str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: process.poll() is not None or is_answering(url + "/openapi.json", timeout=2), 60,
                 what="the example app to answer")
        assert process.poll() is None, (stack.state_dir / "example-app.log").read_text()
        with httpx.Client(base_url=url, timeout=budget(30)) as client:
            yield client
    finally:
        process.terminate()
        process.wait(timeout=budget(30))
        log.close()


@pytest.mark.parametrize(("resolution", "runs_on"), [("8K", "batch"), ("720p", "private")])
def test_the_hot_endpoint_hands_the_transcode_to_jobbridge_and_it_runs(shop: httpx.Client, stack: RunningStack,
                                                                      resolution: str, runs_on: str) -> None:
    answer = shop.post("/videos", json={"title": "Launch", "resolution": resolution, "duration_s": 2})
    assert answer.status_code == 202, answer.text
    video = answer.json()
    assert video["runs_on"] == runs_on

    def transcoded() -> dict | None:
        seen = shop.get(f"/videos/{video['video_id']}").json()
        return seen if seen["transcode"] == "SUCCEEDED" else None

    done = wait_for(transcoded, 120, interval=0.5, what=f"the {resolution} transcode")
    assert done["rendition"] == f"renditions/{video['video_id']}/{resolution}.mp4" and done["progress"] == 1.0

    with Client(stack.api_url, token=stack.token("video-shop")) as jobbridge:  # the app's tenant sees the job
        job = jobbridge.wait(video["job_id"], timeout=budget(30))
    assert job.route == runs_on and job.result["video_id"] == video["video_id"]


def test_a_refused_upload_hands_nothing_over(shop: httpx.Client, stack: RunningStack) -> None:
    assert shop.post("/videos", json={"title": "", "resolution": "16K"}).status_code == 422
    with Client(stack.api_url, token=stack.token("video-shop")) as jobbridge:
        before = {job.job_id for job in jobbridge.list()}
        assert shop.post("/videos", json={"title": "x", "duration_s": -1}).status_code == 422
        assert {job.job_id for job in jobbridge.list()} == before
