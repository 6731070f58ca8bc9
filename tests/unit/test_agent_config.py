"""The agent's configuration: a TOML file, JOBBRIDGE_AGENT_* on top, validated once; bad
configuration is one clear line and exit code 2."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import pytest

from jobbridge_agent import cli
from jobbridge_agent.agent import Agent
from jobbridge_agent.config import AgentConfig, ConfigError, load_config

QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/jobbridge-private"
API = "https://abc123.execute-api.eu-west-1.amazonaws.com"
BASE = {"JOBBRIDGE_AGENT_QUEUE_URL": QUEUE, "JOBBRIDGE_AGENT_API_URL": API, "JOBBRIDGE_AGENT_TOKEN": "t0ken"}


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(text)
    return path


def test_file_then_environment_overrides(tmp_path: Path) -> None:
    # given a file with some settings
    path = write(tmp_path, f'queue_url = "{QUEUE}"\napi_url = "{API}/"\ntoken = "from-file"\n'
                           'concurrency = 2\njob_modules = ["a.b", "c"]\nlease_s = 90\n')
    # when the environment sets others
    config = load_config(path, {"JOBBRIDGE_AGENT_CONCURRENCY": "8", "JOBBRIDGE_AGENT_JOB_MODULES": "x, y,,",
                                "JOBBRIDGE_AGENT_HEARTBEAT_S": "20", "JOBBRIDGE_AGENT_EMPTY": ""})
    # then the environment wins, and the file fills the rest
    assert config.concurrency == 8
    assert config.job_modules == ("x", "y")
    assert config.lease_s == 90 and config.heartbeat_s == 20
    assert config.token.get_secret_value() == "from-file"
    assert config.api_url == API  # the trailing slash is dropped
    assert config.message_visibility_s == 90  # defaults to the lease


def test_defaults() -> None:
    config = load_config(None, BASE)
    assert (config.concurrency, config.lease_s, config.heartbeat_s, config.wait_s) == (4, 60, 15.0, 20)
    assert config.auth == "token" and config.owner == f"agent:{config.agent_id}"
    assert config.resolved_region() == "eu-west-1"


def test_region_from_the_api_host_or_fallback() -> None:
    local = {**BASE, "JOBBRIDGE_AGENT_QUEUE_URL": "http://127.0.0.1:4566/123456789012/jobbridge-private",
             "JOBBRIDGE_AGENT_API_URL": "http://127.0.0.1:8000"}
    assert load_config(None, local).resolved_region("us-east-2") == "us-east-2"
    assert load_config(None, {**local, "JOBBRIDGE_AGENT_REGION": "ap-south-1"}).resolved_region("x") == "ap-south-1"
    assert load_config(None, {**local, "JOBBRIDGE_AGENT_API_URL": API}).resolved_region() == "eu-west-1"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"JOBBRIDGE_AGENT_QUEUE_URL": ""}, "queue_url: missing (set it in the config file or JOBBRIDGE_AGENT_QUEUE_URL)"),
        ({"JOBBRIDGE_AGENT_QUEUE_URL": "https://sqs.eu-west-1.amazonaws.com/jobbridge-private"}, "not an SQS queue URL"),
        ({"JOBBRIDGE_AGENT_API_URL": "ftp://example.com"}, "api_url: not an http(s) base URL"),
        ({"JOBBRIDGE_AGENT_API_URL": "http://api.example.com"}, "is not https"),
        ({"JOBBRIDGE_AGENT_HEARTBEAT_S": "30"}, "heartbeat_s (30) must be at most a third of lease_s (60)"),
        ({"JOBBRIDGE_AGENT_VISIBILITY_S": "20"}, "visibility_s (20) must be at least twice heartbeat_s (15)"),
        ({"JOBBRIDGE_AGENT_LEASE_S": "5"}, "lease_s: Input should be greater than or equal to 10"),
        ({"JOBBRIDGE_AGENT_CONCURRENCY": "0"}, "concurrency: Input should be greater than or equal to 1"),
        ({"JOBBRIDGE_AGENT_WAIT_S": "21"}, "wait_s: Input should be less than or equal to 20"),
        ({"JOBBRIDGE_AGENT_TOKEN": ""}, "auth = token needs exactly one of token or token_file"),
        ({"JOBBRIDGE_AGENT_TOKEN_FILE": "/x"}, "auth = token needs exactly one of token or token_file"),
        ({"JOBBRIDGE_AGENT_AUTH": "password"}, "auth: Input should be 'token' or 'iam'"),
        ({"JOBBRIDGE_AGENT_AGENT_ID": "has space"}, "agent_id: use 1-128 of"),
        ({"JOBBRIDGE_AGENT_AUTH": "iam", "JOBBRIDGE_AGENT_API_URL": "http://127.0.0.1:8000"}, "api_url must be https"),
        # The tunnel to the API is TLS whatever the proxy; TLS to the proxy itself is not offered, so a
        # URL that promises it is refused rather than silently sent in the clear.
        ({"JOBBRIDGE_AGENT_PROXY_URL": "https://proxy.corp.example:3128"}, "proxy_url: use http://[user:password@]host:port"),
        ({"JOBBRIDGE_AGENT_PROXY_URL": "proxy.corp.example:3128"}, "proxy_url: use http://[user:password@]host:port"),
        ({"JOBBRIDGE_AGENT_PROXY_URL": "http://proxy.corp.example:3128/path"}, "proxy_url: use http://[user:password@]host:port"),
    ],
)
def test_invalid_settings_are_one_line_errors(env: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, {**BASE, **env})
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message and message.startswith("invalid configuration")


def test_unknown_setting_in_the_file_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, f'queue_url = "{QUEUE}"\napi_url = "{API}"\ntoken = "t"\nconcurency = 3\n')
    with pytest.raises(ConfigError, match=r"concurency: unknown setting"):
        load_config(path, {})


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", {})
    with pytest.raises(ConfigError, match="agent.toml"):
        load_config(write(tmp_path, "queue_url = \n"), {})


def test_loopback_http_is_allowed_and_insecure_http_needs_a_flag() -> None:
    assert load_config(None, {**BASE, "JOBBRIDGE_AGENT_API_URL": "http://localhost:8000"}).api_url
    config = load_config(None, {**BASE, "JOBBRIDGE_AGENT_API_URL": "http://api.lan",
                                "JOBBRIDGE_AGENT_ALLOW_INSECURE_HTTP": "true"})
    assert config.allow_insecure_http


@pytest.fixture(autouse=True)
def _keep_root_logging() -> Iterator[None]:
    """The CLI sets up logging for its process; give the test process its own back."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_cli_bad_configuration_is_one_line_and_exit_2(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("JOBBRIDGE_AGENT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("JOBBRIDGE_AGENT_API_URL", API)
    code = cli.main(["run"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["jobbridge agent: invalid configuration: queue_url: missing (set it in the config file or "
                   "JOBBRIDGE_AGENT_QUEUE_URL)"]


def test_cli_unknown_job_module_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    for key, value in {**BASE, "JOBBRIDGE_AGENT_JOB_MODULES": "no_such_module_xyz"}.items():
        monkeypatch.setenv(key, value)
    code = cli.main(["check"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.strip() == "jobbridge agent: job_modules: No module named 'no_such_module_xyz'"


def test_the_example_config_loads() -> None:
    config = load_config(Path(__file__).parents[2] / "agent" / "agent.example.toml", {})
    assert config.auth == "iam" and config.resolved_region() == "eu-west-1"


def test_runner_schedule_follows_the_configuration() -> None:
    # given a lease of 30 s
    config = load_config(None, {**BASE, "JOBBRIDGE_AGENT_LEASE_S": "30", "JOBBRIDGE_AGENT_HEARTBEAT_S": "10",
                                "JOBBRIDGE_AGENT_KILL_GRACE_S": "3"})
    runner = Agent(config).runner_config
    # then the runner heartbeats at least three times per lease, and flushes progress no slower
    assert runner.lease_s == 30 and runner.heartbeat_s == 10
    assert runner.heartbeat_s * 3 <= runner.lease_s
    assert runner.progress_flush_s <= runner.heartbeat_s
    # and its watchdog only fires after the executor had its chance to kill the job
    assert runner.timeout_grace_s > config.kill_grace_s
    assert runner.owner == f"agent:{config.agent_id}"


def test_config_model_is_frozen() -> None:
    config = AgentConfig.model_validate({"queue_url": QUEUE, "api_url": API, "token": "t"})
    with pytest.raises(Exception):
        config.concurrency = 9  # type: ignore[misc]
