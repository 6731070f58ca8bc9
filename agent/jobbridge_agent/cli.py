"""``jobbridge agent ...``: the thin command around the Agent class. Logging set-up and signals
live here only.

    jobbridge agent run [--config FILE]     run until SIGTERM/SIGINT (a second one stops at once)
    jobbridge agent check [--config FILE]   check the configuration, the queue and the credential

Exit codes: 0 stopped after a signal, 1 forced stop, 2 bad configuration (one line on stderr).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from .config import CONFIG_ENV, ConfigError, load_config

log = logging.getLogger("jobbridge_agent")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobbridge agent", description="The jobbridge on-prem agent.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "receive and run private jobs until stopped"),
                       ("check", "check the configuration, the queue and the API credential, then exit")):
        cmd = sub.add_parser(name, help=text)
        cmd.add_argument("--config", "-c", default=None,
                         help=f"TOML file (default: ${CONFIG_ENV}); JOBBRIDGE_AGENT_* variables override it")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from .agent import Agent  # after argument parsing: `--help` stays instant
    from .jsonlog import configure_logging

    path = args.config or os.environ.get(CONFIG_ENV) or None
    try:
        config = load_config(path, os.environ)
    except ConfigError as exc:
        print(f"jobbridge agent: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    agent = Agent(config)
    try:
        agent.check()
    except ConfigError as exc:
        print(f"jobbridge agent: {exc}", file=sys.stderr)
        return 2
    if args.command == "check":
        print("jobbridge agent: configuration OK", file=sys.stderr)
        return 0
    _on_signals(agent)
    return agent.run()


def _on_signals(agent: Any) -> None:
    received: list[int] = []

    def handle(signum: int, _frame: Any) -> None:
        # Only flags here (Agent.shutdown is safe to call from a handler); the agent logs.
        received.append(signum)
        agent.shutdown(force=len(received) > 1)

    signal.signal(signal.SIGTERM, handle)
    signal.signal(signal.SIGINT, handle)
