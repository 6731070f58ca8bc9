"""``jobbridge local ...``: run the local stack and poke at it.

``jobbridge.cli:main`` hands everything after ``local`` to ``main(argv)``; ``python -m
jobbridge_local ...`` does the same. Signal handling and logging set-up live here only.

    jobbridge local run [--tenant NAME] [--quiet]      moto + resources + API + pollers (make run)
    jobbridge local token --tenant NAME [--ttl S]      a JWT the local API accepts
    jobbridge local token --agent ID [--ttl S]         an agent's JWT (the /agent routes only)
    jobbridge local invoke FUNCTION --event FILE       like `sam local invoke`, without Docker
    jobbridge local resources [--endpoint-url URL]     create the template's resources in moto
    jobbridge local batch [--endpoint-url URL]         the local AWS Batch (run starts it)
    jobbridge local poll FUNCTION [--endpoint-url URL] a function's stream/queue/schedule triggers (run starts these)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shlex
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from . import tokens

logger = logging.getLogger("jobbridge_local")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    _configure_logging(logging.DEBUG if args.verbose else logging.INFO)
    return int(args.func(args) or 0)


def _configure_logging(level: int) -> None:
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Our own handler, not the root's: once a function's Powertools Logger(service="jobbridge")
    # exists, it adds a filter to every root handler that drops records of any logger whose name
    # contains "jobbridge" (aws_lambda_powertools/logging/filters.py SuppressFilter), which would
    # silence the pollers' own messages.
    handler = logging.StreamHandler()
    handler.setFormatter(formatter)
    package_logger = logging.getLogger("jobbridge_local")
    package_logger.addHandler(handler)
    package_logger.setLevel(level)
    package_logger.propagate = False
    # Everything else (botocore, urllib3 narrate every connection at INFO): warnings only.
    logging.basicConfig(level=logging.WARNING, format=formatter._fmt)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jobbridge local", description="The jobbridge stack on this machine.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="start moto server, the resources, the API and the stream pollers")
    run.add_argument("--tenant", default="demo", help="tenant of the printed ready token (default: demo)")
    run.add_argument("--quiet", action="store_true", help="children log to .jobbridge/local/logs/, not here")
    _add_parameter_overrides(run)
    run.set_defaults(func=_run)

    token = sub.add_parser("token", help="print a JWT for the local API")
    who = token.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="a tenant's token (the /jobs routes)")
    who.add_argument("--agent", metavar="ID", help="an on-prem agent's token (the /agent routes), agent_id ID")
    token.add_argument("--ttl", type=int, default=tokens.DEFAULT_TTL_SECONDS, help="seconds (default 12 h)")
    token.add_argument("--sub", default=None, help="subject (default local-user@TENANT)")
    token.add_argument("--claim", action="append", default=[], metavar="NAME=VALUE", help="extra claim (repeatable)")
    token.set_defaults(func=_token)

    invoke = sub.add_parser("invoke", help="invoke a function's handler once, like `sam local invoke`")
    invoke.add_argument("function", help="logical id (BridgeFunction) or short name (bridge)")
    invoke.add_argument("--event", "-e", required=True, help="event JSON file, e.g. events/bridge_insert.json ('-' = stdin)")
    invoke.add_argument("--env-vars", "-n", default=None, help="JSON of extra variables: flat or {LogicalId: {...}}")
    invoke.add_argument("--endpoint-url", default=None, help="moto server (default: the running stack's)")
    _add_parameter_overrides(invoke)
    invoke.set_defaults(func=_invoke)

    resources = sub.add_parser("resources", help="create template.yaml's tables and queues in a running emulator")
    resources.add_argument("--endpoint-url", default=None)
    _add_parameter_overrides(resources)
    resources.set_defaults(func=_resources)

    poll = sub.add_parser("poll", help="run a function's stream, queue and schedule triggers (what `run` starts)")
    poll.add_argument("function")
    poll.add_argument("--endpoint-url", default=None)
    _add_parameter_overrides(poll)
    poll.set_defaults(func=_poll)

    batch = sub.add_parser("batch", help="run the local AWS Batch: its API, containers as processes, state change "
                                         "events (what `run` starts)")
    batch.add_argument("--endpoint-url", default=None, help="moto server (the containers' AWS)")
    batch.add_argument("--host", default="127.0.0.1")
    batch.add_argument("--port", type=int, default=0, help="port of the Batch API (default: a free one)")
    batch.add_argument("--max-running", type=int, default=4, help="containers running at once (default 4)")
    _add_parameter_overrides(batch)
    batch.set_defaults(func=_batch)
    return parser


def _add_parameter_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--parameter-overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="template parameter values, e.g. BridgeBatchSize=10 (as in sam deploy)",
    )


def _parameters(args: argparse.Namespace) -> dict[str, str]:
    # JOBBRIDGE_LOCAL_PARAMS="K=V,K2=V2" first (e.g. `JOBBRIDGE_LOCAL_PARAMS=WorkerTimeout=60 make run`),
    # then --parameter-overrides, which win.
    from_env = [item.strip() for item in os.environ.get("JOBBRIDGE_LOCAL_PARAMS", "").split(",") if item.strip()]
    parameters: dict[str, str] = {}
    for item in [*from_env, *args.parameter_overrides]:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--parameter-overrides takes KEY=VALUE, got {item!r}")
        parameters[key] = value
    return parameters


def _on_signals(callback: Callable[[], None]) -> None:
    def handle(signum: int, _frame: Any) -> None:
        logger.info("%s received: stopping", signal.Signals(signum).name)
        callback()

    signal.signal(signal.SIGINT, handle)
    signal.signal(signal.SIGTERM, handle)


# -- run ---------------------------------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    from .stack import LocalStack, StackConfig, StackInfo

    def ready(info: StackInfo) -> None:
        token = tokens.issue_token(args.tenant, state_dir=stack.config.state_dir)
        body = json.dumps({"type": "echo", "params": {"hello": "world"}})
        queues = "\n".join(f"    {name:<20} {url}" for name, url in info.queues.items())
        print(
            f"""
jobbridge local stack is up
  API           {info.api_url}   (docs: {info.api_url}/docs)
  AWS (moto)    {info.endpoint_url}
  table         {info.table}
  stream        {info.stream_arn}
  Batch (local) {info.batch_endpoint_url or "-"}   (AWS_ENDPOINT_URL_BATCH)
  pollers       {", ".join(f"{name} ({'/'.join(kinds)})" for name, kinds in info.triggers.items()) or "none"}
  agents        {len(info.agents)} on the private queue, `jobbridge agent run --config` {", ".join(info.agents) or "-"}
  queues
{queues}
  state         {stack.config.state_dir / "stack.json"}

export JOBBRIDGE_API_URL={info.api_url} JOBBRIDGE_TOKEN={token}
.venv/bin/jobbridge jobs submit sleep --param seconds:=5 --wait

export TOKEN={token}
curl -s -X POST {info.api_url}/jobs -H "Authorization: Bearer $TOKEN" \\
     -H "Content-Type: application/json" -d {shlex.quote(body)}

Ctrl-C stops everything.
""",
            flush=True,
        )

    stack = LocalStack(StackConfig(quiet=args.quiet, parameters=_parameters(args)), on_ready=ready)
    _on_signals(stack.shutdown)
    return stack.run()


# -- token -------------------------------------------------------------------------------------


def _token(args: argparse.Namespace) -> int:
    extra: dict[str, str] = {}
    for item in args.claim:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--claim takes NAME=VALUE, got {item!r}")
        extra[name] = value
    if args.agent:
        print(tokens.issue_agent_token(args.agent, ttl=args.ttl))
        return 0
    print(tokens.issue_token(args.tenant, ttl=args.ttl, subject=args.sub, extra_claims=extra))
    return 0


# -- invoke ------------------------------------------------------------------------------------


def _invoke(args: argparse.Namespace) -> int:
    from .invoke import LocalFunction, local_context
    from .template import load_template

    template = load_template()
    event = json.load(sys.stdin) if args.event == "-" else json.loads(Path(args.event).read_text())
    context = local_context(args.endpoint_url, _parameters(args))
    function = LocalFunction.from_template(args.function, template, context=context)
    overrides: dict[str, str] = {}
    if args.env_vars:
        # `sam local invoke --env-vars` takes {"LogicalId": {...}} or {"Parameters": {...}}; a flat
        # object is accepted too.
        data = json.loads(Path(args.env_vars).read_text())
        scoped = data.get(function.spec.logical_id) or data.get("Parameters")
        overrides = {k: str(v) for k, v in (scoped if isinstance(scoped, dict) else data).items() if not isinstance(v, dict)}
    if overrides:
        function = LocalFunction(function.spec, function.endpoint_url, overrides, function.region)
    from .paths import read_stack_file

    state = read_stack_file() or {}
    if state.get("batch_endpoint_url") and state.get("endpoint_url") == function.endpoint_url:
        # Against the running stack, Batch calls reach its local Batch, as its functions' do.
        os.environ.setdefault("AWS_ENDPOINT_URL_BATCH", state["batch_endpoint_url"])
    # Like `sam local invoke`: the function's own output (Powertools logs to stdout) goes to
    # stderr, so stdout is the response alone and can be piped to jq.
    with contextlib.redirect_stdout(sys.stderr):
        response = function.invoke(event)
    print(json.dumps(response, indent=2, default=str))
    return 0


# -- resources ---------------------------------------------------------------------------------


def _resources(args: argparse.Namespace) -> int:
    from .invoke import default_endpoint_url
    from .resources import create_resources
    from .template import LocalContext

    endpoint_url = args.endpoint_url or default_endpoint_url()
    context = LocalContext(endpoint_url=endpoint_url, parameters=_parameters(args))
    resources = create_resources(endpoint_url, context=context)
    print(json.dumps(resources.to_dict(), indent=2))
    return 0


# -- poll --------------------------------------------------------------------------------------


def _poll(args: argparse.Namespace) -> int:
    import boto3
    from botocore.config import Config

    from .invoke import LocalFunction, default_endpoint_url
    from .resources import DUMMY_CREDENTIALS, client, describe_resources
    from .schedule import DEFAULT_INTERVAL_SECONDS
    from .template import LocalContext, load_template
    from .triggers import build_triggers

    endpoint_url = args.endpoint_url or default_endpoint_url()
    template = load_template()
    parameters = _parameters(args)
    resources = describe_resources(endpoint_url, template, LocalContext(parameters=parameters))
    context = LocalContext(endpoint_url=endpoint_url, attributes=resources.attributes(), parameters=parameters)
    function = LocalFunction.from_template(args.function, template, endpoint_url, context=context)
    # This process runs this one function, like its Lambda container: set its environment once.
    function.adopt_environment()

    # Its triggers as template.yaml declares them: stream pollers, SQS pollers, schedule timers.
    # One connection per concurrent long poll (botocore's pool holds 10 by default).
    sqs = boto3.client("sqs", endpoint_url=endpoint_url, region_name=context.region,
                       config=Config(max_pool_connections=100), **DUMMY_CREDENTIALS)
    triggers = build_triggers(
        function,
        template,
        context,
        resources,
        {"dynamodbstreams": client("dynamodbstreams", endpoint_url, context.region), "sqs": sqs},
        schedule_interval_s=float(os.environ.get("JOBBRIDGE_SWEEP_INTERVAL_S") or DEFAULT_INTERVAL_SECONDS),
        # Shorter than Lambda's 20 s so that stopping does not wait on an idle long poll; moto answers
        # a long poll as soon as a message arrives either way.
        sqs_wait_time_s=5,
    )
    if not triggers.pollers:
        logger.error("%s has no stream, queue or schedule event in template.yaml", function.spec.logical_id)
        return 2
    _on_signals(triggers.shutdown)
    threads = [threading.Thread(target=p.run, name=f"poller-{i}") for i, p in enumerate(triggers.pollers)]
    for thread in threads:
        thread.start()
    logger.info("%s: %s", function.spec.logical_id, "; ".join(triggers.describe()))
    try:
        # join with a timeout so the main thread stays responsive to signals.
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(0.5)
    finally:
        triggers.close()
    return 0


# -- batch -------------------------------------------------------------------------------------


def _event_drop_fault() -> Callable[[dict[str, Any]], bool] | None:
    """``batch.events:drop=R`` in JOBBRIDGE_FAULTS (the soak's fault rules): drop that share of the
    state change events, counted in JOBBRIDGE_FAULTS_DIR like every injected fault. This process is
    an emulator, never itself faulted: the injector only decides, it hooks no client."""
    spec = os.environ.get("JOBBRIDGE_FAULTS", "").strip()
    if not spec:
        return None
    # Importable where faults are on: whoever sets JOBBRIDGE_FAULTS puts local/ on PYTHONPATH (soak/stack.py).
    from jobbridge_faults import FaultInjector, parse_spec

    rules = [r for r in parse_spec(spec) if r.kind == "drop"]
    if not rules:
        return None
    directory = os.environ.get("JOBBRIDGE_FAULTS_DIR")
    counts_file = None
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        counts_file = Path(directory) / f"{os.getpid()}-batch-events.json"  # not the skipped injector's <pid>.json
    injector = FaultInjector(rules, f"{os.environ.get('JOBBRIDGE_FAULTS_SEED', '0')}:batch-events", counts_file=counts_file)
    return lambda event: injector.decide("batch", "events", "drop")


def _batch(args: argparse.Namespace) -> int:
    from . import paths
    from .invoke import LocalFunction, default_endpoint_url, local_aws_environment
    from .local_batch import EventDelivery, LocalBatch, event_targets
    from .resources import describe_resources
    from .template import LocalContext, load_template

    endpoint_url = args.endpoint_url or default_endpoint_url()
    template = load_template()
    parameters = _parameters(args)
    resources = describe_resources(endpoint_url, template, LocalContext(endpoint_url=endpoint_url, parameters=parameters))
    context = LocalContext(endpoint_url=endpoint_url, attributes=resources.attributes(), parameters=parameters)
    # Where state change events go: the functions whose EventBridge rules match them (template.yaml),
    # invoked in this process. JOBBRIDGE_LOCAL_FUNCTIONS narrows them as it narrows the pollers.
    only = [n.strip() for n in os.environ.get("JOBBRIDGE_LOCAL_FUNCTIONS", "").split(",") if n.strip()]
    targets = [t for t in event_targets(template, context) if not only or t.function_logical_id in only]
    functions = {t.function_logical_id: LocalFunction.from_template(t.function_logical_id, template, endpoint_url,
                                                                    context=context) for t in targets}
    if len(functions) == 1:
        # One function: this process is its container, as a poller process is its function's.
        next(iter(functions.values())).adopt_environment()
    isolate = len(functions) > 1
    delivery = EventDelivery(targets, lambda name, event: functions[name].invoke(event, isolate_environment=isolate),
                             drop=_event_drop_fault())
    batch = LocalBatch(
        template, context,
        aws_env=local_aws_environment(endpoint_url, context.region),
        host=args.host, port=args.port, deliver=delivery, max_running=args.max_running,
        log_dir=paths.state_dir() / "logs" / "batch",
        # The image's PYTHONPATH: batch/Dockerfile copies layers/core/jobbridge and
        # agent/jobbridge_agent to /opt/jobbridge.
        python_path=[str(template.base_dir / "layers" / "core"), str(template.base_dir / "agent")],
    )
    _on_signals(batch.shutdown)
    logger.info("local Batch on %s; events to %s", batch.endpoint_url, ", ".join(functions) or "nobody")
    try:
        batch.run()
    finally:
        delivery.close()
    return 0
