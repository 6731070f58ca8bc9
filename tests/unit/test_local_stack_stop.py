"""How the local stack stops: its consumers (pollers, agents) are asked together, so their long polls
end at the same time instead of one after another; the API, the local Batch and moto stop after them,
last started first (an agent settles its jobs through the API while it drains)."""

from __future__ import annotations

import sys
from pathlib import Path

from jobbridge_local.stack import LocalStack, ProcessComponent
from timing import wait_for

# A child that takes a while to stop (as a poller waiting out its long poll does), noting when it is
# asked and when it is done in one shared file (appends of one short line are atomic).
SLOW_TO_STOP = """
import signal, sys, time
name, journal, linger = sys.argv[1], sys.argv[2], float(sys.argv[3])
def note(what):
    with open(journal, "a") as f:
        f.write(f"{what} {name}\\n")
def stop(*_):
    note("stopping")
    time.sleep(linger)
    note("stopped")
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
note("ready")
while True:
    time.sleep(0.05)
"""
CONSUMERS = ["poller-a", "poller-b", "agent"]


def test_consumers_stop_together_then_the_api_and_moto_last_started_first(tmp_path: Path) -> None:
    journal = tmp_path / "journal"
    stack = LocalStack()
    for name in ["moto", "api", *CONSUMERS]:
        linger = "1.0" if name in CONSUMERS else "0"
        child = ProcessComponent(name, [sys.executable, "-c", SLOW_TO_STOP, name, str(journal), linger], {}, tmp_path)
        stack.components.append(child)
        child.start()
        if name == "api":
            stack._consumers_from = len(stack.components)
    wait_for(lambda: journal.exists() and journal.read_text().count("ready") == 5, 30, what="the children to start")

    stack.stop()

    lines = journal.read_text().splitlines()[5:]
    # every consumer was asked before any had finished: they stopped together, not one after another
    assert sorted(lines[:3]) == sorted(f"stopping {name}" for name in CONSUMERS), lines
    assert sorted(lines[3:6]) == sorted(f"stopped {name}" for name in CONSUMERS), lines
    # then the API, then moto
    assert lines[6:] == ["stopping api", "stopped api", "stopping moto", "stopped moto"]
