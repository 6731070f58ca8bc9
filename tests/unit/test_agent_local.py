"""The local stack's agents: a config file and a token an operator's `jobbridge agent run` accepts."""

from __future__ import annotations

import stat
from pathlib import Path

import jwt
import pytest

from jobbridge_agent.config import load_config
from jobbridge_local import tokens
from jobbridge_local.agents import configured_agents, prepare_agent

QUEUE = "http://127.0.0.1:4566/123456789012/jobbridge-private"


def test_the_generated_config_and_token_are_what_an_operator_would_use(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # given a shell set up for a real agent, and a tuning override
    monkeypatch.setenv("JOBBRIDGE_AGENT_QUEUE_URL", "https://sqs.eu-west-1.amazonaws.com/123456789012/prod-private")
    monkeypatch.setenv("JOBBRIDGE_AGENT_LEASE_S", "45")
    agent = prepare_agent(0, state_dir=tmp_path, queue_url=QUEUE, api_url="http://127.0.0.1:8000",
                          endpoint_url="http://127.0.0.1:4566", region="us-east-1", job_modules="a.b, c",
                          concurrency=3)
    # then it runs as `jobbridge agent run --config FILE`
    assert agent.argv[-4:] == ["agent", "run", "--config", str(agent.config_file)]
    config = load_config(agent.config_file, agent.env)
    assert (config.queue_url, config.concurrency, config.job_modules) == (QUEUE, 3, ("a.b", "c"))
    assert config.lease_s == 45  # tuning passes through; the real queue URL does not
    assert agent.env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:4566"
    # and its token is an agent's, readable by its owner only
    assert stat.S_IMODE(agent.token_file.stat().st_mode) == 0o600
    claims = jwt.decode(agent.token_file.read_text().strip(), tokens.ensure_keypair(tmp_path).public_key_file.read_bytes(),
                        algorithms=["RS256"], audience="jobbridge-agent", issuer=tokens.ISSUER)
    assert claims["agent_id"] == agent.agent_id == "local-agent-1" and "tenant" not in claims


def test_how_many_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBBRIDGE_LOCAL_AGENTS", raising=False)
    assert configured_agents(None) == 1
    assert configured_agents(["ApiFunction", "BridgeFunction"]) == 0  # a narrowed stack runs what it names
    monkeypatch.setenv("JOBBRIDGE_LOCAL_AGENTS", "2")
    assert configured_agents(["ApiFunction"]) == 2
