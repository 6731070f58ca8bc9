"""The jobbridge on-prem agent: pulls private jobs from SQS and runs them with the core runner,
reporting through the API's /agent routes. See agent.py; the command is ``jobbridge agent run``."""

from .agent import Agent, MessageLease
from .config import AgentConfig, ConfigError, load_config

__all__ = ["Agent", "AgentConfig", "ConfigError", "MessageLease", "load_config"]
