"""`jobbridge jobs ...` on the `make run` stack, in a pseudo-terminal: what a person sees.

The whole stack runs (Lambda worker, local Batch, the on-prem agent), so jobs really run. Each
command is the installed `jobbridge` entry point in a pty of its own, so rich draws its progress bar
as on a terminal; the test reads the screen (escape codes stripped) and the exit status.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from e2e_stack import RunningStack, start_stack
from timing import budget

pytestmark = pytest.mark.e2e

JOBBRIDGE = str(Path(sys.executable).with_name("jobbridge"))
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Za-z0-9]|\r")


class Terminal:
    """One `jobbridge jobs ...` in a pty: everything it draws, its exit status."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        self.master = master
        self.raw = b""
        self.process = subprocess.Popen([JOBBRIDGE, "jobs", *args], stdin=slave, stdout=slave, stderr=slave,
                                        env=env, start_new_session=True)
        os.close(slave)

    @property
    def screen(self) -> str:
        return ANSI.sub("", self.raw.decode(errors="replace"))

    def _pump(self, wait_s: float) -> bool:
        """Read what is there within ``wait_s``; False once the pty is closed (the process is gone)."""
        ready, _, _ = select.select([self.master], [], [], wait_s)
        if not ready:
            return True
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every writer closed the pty
            return False
        self.raw += chunk
        return bool(chunk)

    def wait_for_screen(self, predicate: Callable[[str], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + budget(timeout)
        while not predicate(self.screen):
            if time.monotonic() > deadline or not self._pump(0.2):
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{self.screen[-3000:]}")

    def exit_status(self, timeout: float) -> int:
        deadline = time.monotonic() + budget(timeout)
        while self._pump(0.2) or self.process.poll() is None:
            if time.monotonic() > deadline:
                os.killpg(self.process.pid, signal.SIGKILL)
                raise AssertionError(f"the command did not end; the screen:\n{self.screen[-3000:]}")
        os.close(self.master)
        return self.process.wait()


def percentages(screen: str) -> list[int]:
    """The bar's percentages in the order drawn, each change once."""
    seen: list[int] = []
    for value in (int(p) for p in re.findall(r"(\d{1,3})%", screen)):
        if not seen or seen[-1] != value:
            seen.append(value)
    return seen


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningStack]:
    running = start_stack(tmp_path_factory.mktemp("cli-stack"))
    yield running
    running.stop()


@pytest.fixture
def env(stack: RunningStack, tmp_path: Path) -> dict[str, str]:
    """A person's shell: the API's URL and a token in the environment, a terminal of 120 columns."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("JOBBRIDGE_")}
    return {**base, "JOBBRIDGE_API_URL": stack.api_url, "JOBBRIDGE_TOKEN": stack.token("acme"),
            "JOBBRIDGE_CONFIG": str(tmp_path / "none.toml"), "TERM": "xterm-256color", "COLUMNS": "120",
            "LINES": "40"}


def jobs(env: dict[str, str], *args: str, timeout: float = 30) -> tuple[int, str, str]:
    """`jobbridge jobs ARGS` as a script runs it (no terminal): status, stdout, stderr."""
    done = subprocess.run([JOBBRIDGE, "jobs", *args], env=env, capture_output=True, text=True,
                          timeout=budget(timeout))
    return done.returncode, done.stdout, done.stderr


def submitted(env: dict[str, str], *args: str) -> dict[str, Any]:
    status, out, err = jobs(env, "submit", *args, "--json")
    assert status == 0, err
    return json.loads(out)


@pytest.mark.parametrize(("args", "route", "result"), [
    (["echo", "--param", "greeting=hello", "--target", "public"], "lambda", '{"greeting": "hello"}'),
    (["echo", "--param", "greeting=hello", "--target", "private"], "private", '{"greeting": "hello"}'),
    (["transcode", "--param", "video_id=v1", "--param", "resolution=8K", "--param", "duration_s:=8"], "batch",
     '"rendition": "8K"'),
], ids=["lambda", "private", "batch"])
def test_submit_wait_shows_the_job_to_its_end_and_exits_0(env, args: list[str], route: str, result: str) -> None:
    terminal = Terminal(["submit", *args, "--wait"], env)

    assert terminal.exit_status(timeout=120) == 0, terminal.screen
    screen = terminal.screen
    assert re.search(r"job_\w+ SUCCEEDED", screen) and result in screen
    assert percentages(screen)[-1] == 100
    if route == "batch":  # transcode reports its four passes (2 s each; the runner writes progress every 2 s)
        assert {25, 50, 75} & set(percentages(screen)), percentages(screen)
    job_id = re.search(r"(job_\w+) SUCCEEDED", screen).group(1)
    assert f"{job_id} SUCCEEDED on {route}" in screen and f"{job_id} on {route}" in screen  # the line, the bar
    status, out, _ = jobs(env, "get", job_id, "--json")
    assert status == 0 and json.loads(out)["route"] == route


def test_watch_draws_the_bar_moving_to_100(env) -> None:
    job_id = submitted(env, "sleep", "--param", "seconds:=12", "--param", "steps:=4")["job_id"]

    terminal = Terminal(["watch", job_id], env)

    assert terminal.exit_status(timeout=120) == 0, terminal.screen
    drawn = percentages(terminal.screen)
    assert drawn == sorted(drawn) and drawn[-1] == 100
    assert len([p for p in drawn if 0 < p < 100]) >= 2, drawn  # it moved in steps, not in one jump
    assert f"{job_id} SUCCEEDED" in terminal.screen


def test_cancel_ends_a_watch_with_cancelled_and_exit_3(env) -> None:
    job_id = submitted(env, "sleep", "--param", "seconds:=120", "--param", "steps:=120")["job_id"]
    watcher = Terminal(["watch", job_id], env)
    watcher.wait_for_screen(lambda screen: "RUNNING" in screen, timeout=60, what="the job to run")

    status, out, err = jobs(env, "watch", job_id, "--timeout", "1")
    assert status == 4 and "still RUNNING" in err  # gave up waiting; the job goes on

    status, out, err = jobs(env, "cancel", job_id, "--json")
    assert status == 0, err
    assert json.loads(out)["cancel_requested"] is True

    assert watcher.exit_status(timeout=90) == 3, watcher.screen
    assert f"{job_id} CANCELLED" in watcher.screen


def test_exit_status_says_failed_refused_unknown_and_unauthorised(env, tmp_path: Path) -> None:
    status, out, _ = jobs(env, "submit", "fail", "--param", "message=broken on purpose", "--param",
                          "retryable:=false", "--wait", timeout=120)
    assert status == 1 and "FAILED" in out and "broken on purpose" in out

    status, _, err = jobs(env, "submit", "transcode", "--param", "resolution=8K")
    assert status == 7 and "params" in err and "video_id" in err  # the problem names the field

    assert jobs(env, "get", "job_01jzzzzzzzzzzzzzzzzzzzzzzz")[0] == 6
    assert jobs({**env, "JOBBRIDGE_TOKEN": "not-a-token"}, "list")[0] == 5
    assert jobs(env, "submit", "echo", "--param", "no-equals-sign")[0] == 2


def test_a_profile_with_a_token_command(env, stack: RunningStack, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[local]\napi_url = "{stack.api_url}"\n'
                      f'token_command = "{JOBBRIDGE} local token --tenant globex"\n')
    profile_env = {k: v for k, v in env.items() if k not in ("JOBBRIDGE_API_URL", "JOBBRIDGE_TOKEN")}
    profile_env.update({"JOBBRIDGE_CONFIG": str(config), "JOBBRIDGE_STATE_DIR": str(stack.state_dir)})

    accepted = submitted(profile_env, "echo", "--profile", "local")
    status, out, _ = jobs(profile_env, "list", "--profile", "local", "--json")

    assert status == 0 and [json.loads(line)["job_id"] for line in out.splitlines()] == [accepted["job_id"]]
    assert jobs(env, "get", accepted["job_id"])[0] == 6  # globex's job: acme cannot see it


def test_a_hot_job_type_answers_final_in_the_submit(env) -> None:
    status, out, err = jobs(env, "submit", "checksum", "--param", "text=hello")

    assert status == 0, err
    assert "SUCCEEDED" in out and "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824" in out
