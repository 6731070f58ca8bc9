"""``jobbridge jobs ...`` (and ``jobbridge-jobs ...``): submit, follow and cancel jobs from the shell.

Signals and output live here; the work is ``Client``'s.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

from . import __version__
from .client import Client
from .config import ConfigError, TokenCommandFailed, load_profile
from .errors import AuthError, ConnectionFailed, JobBridgeError, NotFound, ProblemError, ServerError, WaitTimeout
from .models import Accepted, Job, State

# The exit status says how it ended: scripts branch on it.
EXIT_OK = 0          # done; with --wait or watch: the job SUCCEEDED
EXIT_FAILED = 1      # the job FAILED
EXIT_USAGE = 2       # bad arguments or configuration
EXIT_CANCELLED = 3   # the job was CANCELLED
EXIT_TIMEOUT = 4     # --timeout passed and the job is still QUEUED or RUNNING
EXIT_AUTH = 5        # the API refused the token (401/403), or the token command failed
EXIT_NOT_FOUND = 6   # no such job
EXIT_REFUSED = 7     # the API refused the request (invalid params, job already final, ...)
EXIT_UNAVAILABLE = 8  # the API could not be reached or kept failing (after retries)
EXIT_INTERRUPTED = 130  # Ctrl-C: the job itself goes on

STATE_EXIT = {State.SUCCEEDED: EXIT_OK, State.FAILED: EXIT_FAILED, State.CANCELLED: EXIT_CANCELLED}

EPILOG = """\
configuration (the first that says wins):
  --api-url / --profile flags; JOBBRIDGE_API_URL, JOBBRIDGE_TOKEN, JOBBRIDGE_TOKEN_COMMAND,
  JOBBRIDGE_PROFILE, JOBBRIDGE_CONFIG; then the profile file ~/.config/jobbridge/config.toml:
    [default]
    api_url = "http://127.0.0.1:8000"
    token_command = "jobbridge local token --tenant acme"

exit status:
  0 done (with --wait or watch: SUCCEEDED)   1 FAILED          2 usage or configuration
  3 CANCELLED                                4 --timeout passed, the job still active
  5 token refused, or token_command failed   6 no such job     7 request refused (4xx)
  8 API unreachable or failing               130 interrupted (the job goes on)
"""


def build_parser(prog: str = "jobbridge jobs") -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--api-url", help="the API's base URL (else JOBBRIDGE_API_URL or the profile)")
    common.add_argument("--profile", help="the profile of the config file (default: JOBBRIDGE_PROFILE or default)")
    common.add_argument("--json", action="store_true", help="machine-readable output: JSON, one object a line")

    parser = argparse.ArgumentParser(prog=prog, description="Submit, follow and cancel jobbridge jobs.",
                                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"jobbridge-client {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    submit = commands.add_parser("submit", parents=[common], help="submit a job")
    submit.add_argument("type", metavar="TYPE", help="the job type (GET /job-types lists them)")
    submit.add_argument("--param", "-p", action="append", default=[], metavar="K=V",
                        help="a parameter: k=v is the string v; k:=JSON a number, boolean, list or object")
    submit.add_argument("--param-file", metavar="FILE", help="a JSON object of parameters (- for stdin); --param adds to it")
    submit.add_argument("--target", choices=["auto", "public", "private"], help="where it may run")
    submit.add_argument("--priority", type=int, help="-100..100, higher first")
    submit.add_argument("--idempotency-key", help="repeat a submit safely: the same key and body give the same job")
    _add_wait_flags(submit, "--wait", "wait for the job to end, with a progress bar; the exit status is its state")

    for name, help_ in (("get", "show a job"), ("watch", "follow a job to its end, with a progress bar"),
                        ("cancel", "cancel a job: at once if queued, cooperatively if running")):
        sub = commands.add_parser(name, parents=[common], help=help_)
        sub.add_argument("job_id", metavar="ID")
        if name == "watch":
            sub.add_argument("--timeout", type=float, metavar="S", help="give up (exit 4) after S seconds")
        if name == "cancel":
            _add_wait_flags(sub, "--wait", "wait for the job to end; the exit status is its state")

    listing = commands.add_parser("list", parents=[common], help="list jobs, newest first")
    listing.add_argument("--state", choices=[s.value for s in State])
    listing.add_argument("--type")
    listing.add_argument("--limit", type=int, default=20, help="at most this many (default 20; 0: all)")
    return parser


def _add_wait_flags(parser: argparse.ArgumentParser, flag: str, help_: str) -> None:
    parser.add_argument(flag, action="store_true", help=help_)
    parser.add_argument("--timeout", type=float, metavar="S", help="with --wait: give up (exit 4) after S seconds")


def parse_params(pairs: list[str], param_file: str | None, stdin: TextIO = sys.stdin) -> dict[str, Any]:
    """``--param-file`` then each ``--param`` (``k=v`` a string, ``k:=JSON`` any JSON value)."""
    params: dict[str, Any] = {}
    if param_file:
        try:
            text = stdin.read() if param_file == "-" else Path(param_file).read_text()
            loaded = json.loads(text)
        except (OSError, ValueError) as exc:
            raise UsageError(f"--param-file {param_file}: {exc}") from None
        if not isinstance(loaded, dict):
            raise UsageError(f"--param-file {param_file}: a JSON object is needed, not {type(loaded).__name__}")
        params.update(loaded)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key or key == ":":
            raise UsageError(f"--param {pair!r}: expected KEY=VALUE or KEY:=JSON")
        if key.endswith(":"):
            try:
                params[key[:-1]] = json.loads(value)
            except ValueError as exc:
                raise UsageError(f"--param {pair!r}: not JSON: {exc}") from None
        else:
            params[key] = value
    return params


class UsageError(Exception):
    pass


# --- what a person (or a script) sees ------------------------------------------------------------


class Output:
    def __init__(self, as_json: bool, out: TextIO, err: TextIO) -> None:
        self.as_json = as_json
        self.out = out
        self.err = err

    def record(self, data: dict[str, Any]) -> None:
        print(json.dumps(data, separators=(",", ":"), default=str), file=self.out, flush=True)

    def line(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    def error(self, text: str) -> None:
        print(f"jobbridge: {text}", file=self.err, flush=True)

    def accepted(self, accepted: Accepted) -> None:
        if self.as_json:
            self.record(asdict(accepted))
        else:
            again = " (replayed: this key made it before)" if accepted.replayed else ""
            self.line(f"{accepted.job_id} {accepted.state.value} on {accepted.route}{again}")

    def job(self, job: Job) -> None:
        if self.as_json:
            self.record(job.raw)
            return
        self.line(f"{job.job_id} {job.state.value}  type {job.type}  route {job.route}  "
                  f"attempt {job.attempt}/{job.max_attempts}{'  cancel requested' if job.cancel_requested else ''}")
        if job.progress:
            self.line(f"  progress {job.progress.fraction:.0%} {job.progress.message}".rstrip())
        self.line(f"  created {job.created_at}" + (f"  finished {job.finished_at}" if job.finished_at else ""))
        self.outcome(job)

    def outcome(self, job: Job) -> None:
        if job.state is State.SUCCEEDED:
            self.line(f"  result {json.dumps(job.result, default=str)}")
        elif job.error is not None:
            self.line(f"  error {job.error.type}: {job.error.message}")

    def final(self, job: Job) -> None:
        """The last word of ``--wait``/``watch`` for a person."""
        self.line(f"{job.job_id} {job.state.value} on {job.route}")
        self.outcome(job)


def follow(jobs: Iterator[Job], output: Output, *, bar: bool) -> Job:
    """Consume ``watch``: a progress bar on a terminal, else a line (or JSON record) per change."""
    if bar and not output.as_json:
        try:
            return _follow_with_bar(jobs, output)
        except ImportError:  # rich is the [cli] extra: without it, lines
            pass
    job = None
    for job in jobs:
        if output.as_json:
            output.record(job.raw)
        else:
            output.err.write(f"{_status(job)}\n")
            output.err.flush()
    assert job is not None
    return job


def _status(job: Job) -> str:
    progress = f" {job.progress.fraction:.0%} {job.progress.message}".rstrip() if job.progress else ""
    cancel = " (cancel requested)" if job.cancel_requested and not job.state.is_final else ""
    return f"{job.job_id} {job.state.value}{progress}{cancel}"


def _follow_with_bar(jobs: Iterator[Job], output: Output) -> Job:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn

    console = Console(file=output.err)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[state]}"), TimeElapsedColumn())
    job = None
    with Progress(*columns, console=console, refresh_per_second=8) as progress:
        task = None
        for job in jobs:
            fraction = job.progress.fraction if job.progress else 0.0
            if job.state is State.SUCCEEDED:
                fraction = 1.0
            label = job.state.value + (f" {job.progress.message}" if job.progress and job.progress.message else "")
            if job.cancel_requested and not job.state.is_final:
                label += " (cancel requested)"
            if task is None:
                task = progress.add_task(f"{job.job_id} on {job.route}", total=1.0, completed=fraction, state=label)
            else:
                progress.update(task, completed=fraction, state=label)
    assert job is not None
    return job


# --- the commands --------------------------------------------------------------------------------


def run(args: argparse.Namespace, client: Client, output: Output, *, is_terminal: bool) -> int:
    if args.command == "submit":
        params = parse_params(args.param, args.param_file)
        accepted = client.submit(args.type, params, target=args.target, priority=args.priority,
                                 idempotency_key=args.idempotency_key)
        if accepted.job is not None:  # a hot job type ran in the request: it is final already
            if output.as_json:
                output.record(accepted.job.raw)
            else:
                output.final(accepted.job)
            return STATE_EXIT[accepted.job.state]
        if not args.wait:
            output.accepted(accepted)
            return EXIT_OK
        if output.as_json:
            output.accepted(accepted)
        return _watch(client, accepted.job_id, args.timeout, output, is_terminal)
    if args.command == "get":
        output.job(client.get(args.job_id))
        return EXIT_OK
    if args.command == "list":
        for count, summary in enumerate(client.list(state=args.state, type=args.type,
                                                    page_size=min(100, args.limit or 100)), start=1):
            if output.as_json:
                output.record(summary.raw)
            else:
                progress = f"{summary.progress.fraction:.0%}" if summary.progress else ""
                output.line(f"{summary.job_id}  {summary.state.value:<9}  {summary.route:<7}  {summary.type:<16}  "
                            f"{summary.created_at}  {progress}".rstrip())
            if args.limit and count >= args.limit:
                break
        return EXIT_OK
    if args.command == "cancel":
        job = client.cancel(args.job_id)
        if not args.wait:
            output.job(job)
            return EXIT_OK
        return _watch(client, args.job_id, args.timeout, output, is_terminal)
    if args.command == "watch":
        return _watch(client, args.job_id, args.timeout, output, is_terminal)
    raise UsageError(f"unknown command {args.command!r}")


def _watch(client: Client, job_id: str, timeout: float | None, output: Output, is_terminal: bool) -> int:
    try:
        job = follow(client.watch(job_id, timeout=timeout), output, bar=is_terminal)
    except WaitTimeout as exc:
        output.error(f"{exc}; `jobbridge jobs watch {job_id}` follows it further")
        return EXIT_TIMEOUT
    if not output.as_json:  # with --json, the last record written is already the final job
        output.final(job)
    return STATE_EXIT[job.state]


def exit_code_of(exc: JobBridgeError) -> int:
    if isinstance(exc, AuthError):
        return EXIT_AUTH
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND
    if isinstance(exc, (ServerError, ConnectionFailed)) or (isinstance(exc, ProblemError) and exc.status == 429):
        return EXIT_UNAVAILABLE
    return EXIT_REFUSED


def main(argv: list[str] | None = None, *, prog: str = "jobbridge-jobs",
         make_client: Callable[..., Client] = Client) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    output = Output(args.json, sys.stdout, sys.stderr)
    try:
        profile = load_profile(api_url=args.api_url, profile=args.profile)
        # Polls at most a second apart (when the server has no long poll): a bar that keeps up.
        with make_client(profile.api_url, token=profile.token_source(), poll=(0.25, 1.0)) as client:
            return run(args, client, output, is_terminal=sys.stderr.isatty())
    except UsageError as exc:
        output.error(str(exc))
        return EXIT_USAGE
    except TokenCommandFailed as exc:
        output.error(str(exc))
        return EXIT_AUTH
    except ConfigError as exc:
        output.error(str(exc))
        return EXIT_USAGE
    except ProblemError as exc:
        output.error(str(exc))
        for field in exc.errors:
            output.error(f"  {'.'.join(str(p) for p in field.get('loc', []))}: {field.get('msg', '')}")
        return exit_code_of(exc)
    except JobBridgeError as exc:
        output.error(str(exc))
        return exit_code_of(exc)
    except KeyboardInterrupt:
        output.error("interrupted; the job goes on (`jobbridge jobs cancel ID` stops it)")
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
