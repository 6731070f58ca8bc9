"""The ``jobbridge`` command: ``jobbridge jobs ...`` (the client, clients/python), ``jobbridge local ...``
(the local stack) and ``jobbridge agent ...``.

Subcommands are imported only when used, so the agent install does not need the local stack's
dependencies and vice versa.
"""

from __future__ import annotations

import sys

USAGE = """usage: jobbridge {jobs,local,agent} ...

  jobs submit TYPE [--param K=V] [--wait]  submit a job; get, list, watch, cancel (jobbridge jobs --help)
  local run                              start the whole system on this machine (moto server)
  local token --tenant NAME              print a token for the local API
  local invoke FUNCTION --event FILE     invoke a function's handler like `sam local invoke`
  agent run [--config FILE]              run the on-prem agent
"""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    command, rest = args[0], args[1:]
    if command == "jobs":
        try:
            from jobbridge_client.cli import main as jobs_main
        except ImportError as exc:
            print(f"jobbridge: the client is not installed (pip install 'jobbridge-client[cli]'): {exc}",
                  file=sys.stderr)
            return 2
        return jobs_main(rest, prog="jobbridge jobs")
    if command == "local":
        from jobbridge_local.cli import main as local_main

        return local_main(rest)
    if command == "agent":
        try:
            from jobbridge_agent.cli import main as agent_main
        except ImportError as exc:
            print(f"jobbridge: the agent is not installed: {exc}", file=sys.stderr)
            return 2
        return agent_main(rest)
    print(f"jobbridge: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
