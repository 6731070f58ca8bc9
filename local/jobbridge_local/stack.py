"""``make run``: the whole jobbridge system on one machine.

In order: moto server on loopback; the tables and queues of template.yaml; the local JWT keys;
``.jobbridge/local/stack.json``; the API under uvicorn; then one poller process per function
with a DynamoDB stream, SQS or schedule trigger in template.yaml (jobbridge_local.triggers).
Everything is a ``Component`` with ``start``/``stop``/``is_alive``; later pieces (a local Batch,
an agent) are more components in the same list.

Each function runs in its own process with its own environment, as each Lambda function has
its own container: the API (``ApiFunction``'s environment, auth mode ``verify``) and each poller.

``LocalStack.run()`` blocks until ``shutdown()`` (which only sets a flag) or until a component
dies, then stops everything in reverse order. Signals are the CLI's business.

Example::

    stack = LocalStack(StackConfig(aws_port=free_port(), api_port=free_port()))
    threading.Thread(target=stack.run).start()
    ...
    stack.shutdown()
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Callable, Protocol

from . import paths, tokens
from .agents import LocalAgent, configured_agents, configured_concurrency, prepare_agent
from .invoke import function_environment
from .motoserver import DEFAULT_HOST, MotoServer, configured_port, free_port, is_answering
from .resources import LocalResources, create_resources
from .template import FUNCTION_TYPES, LocalContext, Template, load_template
from .triggers import triggered_functions

logger = logging.getLogger(__name__)

DEFAULT_API_PORT = 8000
STOP_GRACE_SECONDS = 10.0
# uvicorn's h11 parser (chosen explicitly: the same parser whatever else is installed) gives up on a
# request head still incomplete past 16 KiB and closes the connection with a bare 400 while the client
# may still be writing (which the client then sees as a reset). Heads up to this size are read whole, so the API's own BodyLimit answers what API Gateway
# answers for a head over 10 KiB: a 431 problem. Past it the connection is refused without reading on.
MAX_REQUEST_HEAD_BYTES = 1024 * 1024


def configured_api_port() -> int:
    """``JOBBRIDGE_API_PORT`` or 8000 (docs/CONTRACTS.md, "Local stack")."""
    return int(os.environ.get("JOBBRIDGE_API_PORT") or DEFAULT_API_PORT)


def configured_functions() -> list[str] | None:
    """``JOBBRIDGE_LOCAL_FUNCTIONS`` (comma-separated logical ids): only these functions' pollers
    run, e.g. ``ApiFunction,BridgeFunction`` to leave messages in their queues. None: all."""
    value = os.environ.get("JOBBRIDGE_LOCAL_FUNCTIONS")
    return [name.strip() for name in value.split(",") if name.strip()] if value else None


def configured_batch_port() -> int:
    """``JOBBRIDGE_BATCH_PORT``, or 0: the local Batch API takes a free port (stack.json says which)."""
    return int(os.environ.get("JOBBRIDGE_BATCH_PORT") or 0)


class Component(Protocol):
    """One running piece of the local stack."""

    name: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def is_alive(self) -> bool: ...


class ProcessComponent:
    """A child process; ``start()`` returns once ``ready_url`` answers (if given)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        cwd: Path,
        log_file: Path | None = None,
        ready_url: str | None = None,
        ready_timeout: float = 30.0,
    ):
        self.name = name
        self.argv = argv
        self.env = env
        self.cwd = cwd
        self.log_file = log_file
        self.ready_url = ready_url
        self.ready_timeout = ready_timeout
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_file.open("ab")
        self._process = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,  # None: inherit the terminal
            stderr=subprocess.STDOUT if self._log else None,
            # Own process group: Ctrl-C reaches only the CLI, which stops children in order.
            start_new_session=True,
        )
        if self.ready_url is None:
            return
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if not self.is_alive():
                raise RuntimeError(f"{self.name} exited with {self._process.returncode} while starting")
            if is_answering(self.ready_url):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not answer on {self.ready_url} within {self.ready_timeout} s")

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.returncode

    def request_stop(self) -> None:
        """SIGTERM without waiting: uvicorn and the pollers finish in-flight work first."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


@dataclass
class StackConfig:
    host: str = DEFAULT_HOST
    aws_port: int = field(default_factory=configured_port)
    api_port: int = field(default_factory=configured_api_port)
    root: Path = field(default_factory=paths.project_root)
    # Child output to .jobbridge/local/logs/<name>.log instead of the terminal (moto always is).
    quiet: bool = False
    # The local Batch API (jobbridge_local.local_batch); 0: a free port.
    batch_port: int = field(default_factory=configured_batch_port)
    # Template parameter overrides (like `sam deploy --parameter-overrides`).
    parameters: dict[str, str] = field(default_factory=dict)
    # Functions whose triggers run (logical ids); None: every triggered function of the template.
    functions: list[str] | None = field(default_factory=configured_functions)
    # On-prem agents run as operators run them (jobbridge_local.agents); None: JOBBRIDGE_LOCAL_AGENTS.
    agents: int | None = None
    agent_concurrency: int = field(default_factory=configured_concurrency)

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.aws_port}"

    @property
    def api_url(self) -> str:
        return f"http://{self.host}:{self.api_port}"

    @property
    def state_dir(self) -> Path:
        return paths.state_dir(self.root)


@dataclass
class StackInfo:
    """What ``stack.json`` holds: how to reach the running stack."""

    endpoint_url: str
    api_url: str
    region: str
    account_id: str
    stack_name: str
    table: str | None
    stream_arn: str | None
    queues: dict[str, str]
    jwt_public_key_file: str
    jwt_issuer: str
    jwt_audience: str
    stream_pollers: list[str]
    resources: dict
    pid: int = field(default_factory=os.getpid)
    # Every function with an emulated trigger -> its trigger types (DynamoDB, SQS, Schedule); each
    # runs in a poller process of its own (jobbridge_local.triggers).
    triggers: dict[str, list[str]] = field(default_factory=dict)
    # The local Batch API (AWS_ENDPOINT_URL_BATCH of every function), when the template has job queues.
    batch_endpoint_url: str | None = None
    # The local agents' config files (`jobbridge agent run --config FILE`).
    agents: list[str] = field(default_factory=list)


class LocalStack:
    def __init__(self, config: StackConfig | None = None, on_ready: Callable[[StackInfo], None] | None = None):
        self.config = config or StackConfig()
        self.on_ready = on_ready
        self.components: list[Component] = []
        self.info: StackInfo | None = None
        self._stop = threading.Event()
        self._stopped = False
        # Components started after the API consume work (pollers, agents): they stop together.
        self._consumers_from: int | None = None
        # Service-specific endpoints every child gets on top of AWS_ENDPOINT_URL (moto), e.g.
        # AWS_ENDPOINT_URL_BATCH for the local Batch (botocore reads them per service).
        self._local_endpoints: dict[str, str] = {}

    # -- lifecycle ----------------------------------------------------------------------------

    def run(self) -> int:
        """Start, report ready, block until ``shutdown()`` or a component dies; then stop.

        Returns 0 after a requested shutdown, 1 when a component died on its own.
        """
        try:
            info = self.start()
            if self.on_ready is not None:
                self.on_ready(info)
            while not self._stop.wait(0.5):
                dead = [c.name for c in self.components if not c.is_alive()]
                if dead:
                    logger.error("%s stopped unexpectedly; stopping the stack", ", ".join(dead))
                    return 1
            return 0
        finally:
            self.stop()

    def shutdown(self) -> None:
        """Ask ``run()`` to stop the stack and return. Idempotent; never blocks."""
        self._stop.set()

    def start(self) -> StackInfo:
        cfg = self.config
        template = load_template(paths.template_path(cfg.root))
        logs = cfg.state_dir / "logs"

        moto = MotoServer(cfg.host, cfg.aws_port, log_file=logs / "moto.log")
        self._start(moto)

        resources = create_resources(
            cfg.endpoint_url, template, LocalContext(endpoint_url=cfg.endpoint_url, parameters=cfg.parameters)
        )
        context = LocalContext(
            endpoint_url=cfg.endpoint_url, attributes=resources.attributes(), parameters=cfg.parameters
        )
        keys = tokens.ensure_keypair(cfg.state_dir)
        # Derived from template.yaml: a function with a stream, queue or schedule event gets a poller
        # process, so a function added to the template is part of `make run`.
        triggers = {
            name: kinds for name, kinds in triggered_functions(template).items()
            if cfg.functions is None or name in cfg.functions
        }
        streams = [name for name in stream_triggered_functions(template) if name in triggers]
        self.info = self._stack_info(template, resources, context, keys, streams)
        self.info.triggers = triggers
        agent_count = configured_agents(cfg.functions) if cfg.agents is None else cfg.agents
        local_agents = [self._prepare_agent(template, context, resources, index) for index in range(agent_count)]
        self.info.agents = [str(agent.config_file) for agent in local_agents]
        paths.stack_file(cfg.root).write_text(json.dumps(asdict(self.info), indent=2) + "\n")

        # Before the functions: their environment carries the local Batch's endpoint.
        batch = self._local_batch_component(template, context, logs)
        if batch is not None:
            self._start(batch)
        self._start(self._api_component(template, context, keys, logs))
        self._consumers_from = len(self.components)
        for logical_id in triggers:
            self._start(self._poller_component(template, context, logical_id, logs))
        for agent in local_agents:
            self._start(ProcessComponent(f"agent:{agent.agent_id}", agent.argv, agent.env, cfg.root,
                                         self._child_log(logs, agent.agent_id)))
        return self.info

    def stop(self) -> None:
        """Stop every component, last started first. Idempotent.

        The consumers (pollers and agents) are asked to stop all at once, since each may be waiting
        out a long poll; the API, the local Batch and moto stop after them, one by one (the agents
        settle their jobs through the API, and every consumer through moto)."""
        if self._stopped:
            return
        self._stopped = True
        if self._consumers_from is not None:
            for component in self.components[self._consumers_from:]:
                if isinstance(component, ProcessComponent):
                    component.request_stop()
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:  # noqa: BLE001 - keep stopping the others
                logger.exception("stopping %s failed", component.name)
        # Only our own stack.json: another stack may have started since and written its own.
        state = paths.read_stack_file(self.config.root)
        if state is not None and state.get("pid") == os.getpid():
            paths.stack_file(self.config.root).unlink(missing_ok=True)

    # -- pieces -------------------------------------------------------------------------------

    def _start(self, component: Component) -> None:
        # Registered before start: a component that fails half-way is still stopped.
        self.components.append(component)
        logger.info("starting %s", component.name)
        component.start()

    def _child_log(self, logs: Path, name: str) -> Path | None:
        return logs / f"{name}.log" if self.config.quiet else None

    def _python_path(self, *directories: Path) -> str:
        package_parent = Path(__file__).resolve().parent.parent  # so children import jobbridge_local
        entries = [str(d) for d in (*directories, package_parent)]
        existing = os.environ.get("PYTHONPATH")
        return os.pathsep.join(entries + ([existing] if existing else []))

    def _api_component(self, template: Template, context: LocalContext, keys: tokens.KeyPair, logs: Path) -> Component:
        cfg = self.config
        spec = template.function_spec("ApiFunction", context)
        # In AWS, API Gateway's JWT authorizer checks tokens (auth mode gateway). Locally there is
        # no gateway, so the app verifies them itself against the local key (docs/CONTRACTS.md).
        overrides = {
            "JOBBRIDGE_AUTH_MODE": "verify",
            "JOBBRIDGE_JWT_PUBLIC_KEY_FILE": str(keys.public_key_file),
            "JOBBRIDGE_JWT_ISSUER": tokens.ISSUER,
            "JOBBRIDGE_JWT_AUDIENCE": tokens.AUDIENCE,
        }
        env = {**os.environ, **self._local_endpoints,
               **function_environment(spec, cfg.endpoint_url, overrides, context.region)}
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
            env.pop(name, None)
        env["PYTHONPATH"] = self._python_path(spec.code_dir, *spec.layer_dirs)
        argv = [sys.executable, "-m", "uvicorn", "jobbridge_api.main:app", "--host", cfg.host, "--port", str(cfg.api_port),
                "--http", "h11", "--h11-max-incomplete-event-size", str(MAX_REQUEST_HEAD_BYTES)]
        return ProcessComponent(
            "api", argv, env, cfg.root, self._child_log(logs, "api"), ready_url=cfg.api_url + "/openapi.json"
        )

    def _prepare_agent(self, template: Template, context: LocalContext, resources: LocalResources,
                       index: int) -> LocalAgent:
        cfg = self.config
        return prepare_agent(
            index, state_dir=cfg.state_dir, queue_url=resources.queue("PrivateQueue").url, api_url=cfg.api_url,
            endpoint_url=cfg.endpoint_url, region=context.region, concurrency=cfg.agent_concurrency,
            # the job types the API accepts: the same modules (template parameter JobModules)
            job_modules=template.function_spec("ApiFunction", context).environment.get("JOBBRIDGE_JOB_MODULES", ""),
        )

    def _local_batch_component(self, template: Template, context: LocalContext, logs: Path) -> Component | None:
        """The local Batch (``jobbridge local batch``): the Batch API for the template's job queues,
        containers as processes, state change events to the functions whose rules match."""
        cfg = self.config
        if not template.resources_of_type("AWS::Batch::JobQueue"):
            return None
        port = cfg.batch_port or free_port(cfg.host)
        url = f"http://{cfg.host}:{port}"
        self._local_endpoints["AWS_ENDPOINT_URL_BATCH"] = url
        if self.info is not None:
            self.info.batch_endpoint_url = url
            paths.stack_file(cfg.root).write_text(json.dumps(asdict(self.info), indent=2) + "\n")
        argv = [sys.executable, "-m", "jobbridge_local", "batch", "--endpoint-url", cfg.endpoint_url,
                "--host", cfg.host, "--port", str(port)]
        if cfg.parameters:
            argv += ["--parameter-overrides", *(f"{k}={v}" for k, v in cfg.parameters.items())]
        env = {**os.environ, "PYTHONPATH": self._python_path()}
        return ProcessComponent("batch", argv, env, cfg.root, self._child_log(logs, "batch"),
                                ready_url=url + "/_local/health")

    def _poller_component(self, template: Template, context: LocalContext, logical_id: str, logs: Path) -> Component:
        cfg = self.config
        spec = template.function_spec(logical_id, context)
        env = {**os.environ, **self._local_endpoints, "PYTHONPATH": self._python_path(spec.code_dir, *spec.layer_dirs)}
        argv = [sys.executable, "-m", "jobbridge_local", "poll", logical_id, "--endpoint-url", cfg.endpoint_url]
        if cfg.parameters:
            argv += ["--parameter-overrides", *(f"{k}={v}" for k, v in cfg.parameters.items())]
        name = f"poller:{logical_id}"
        return ProcessComponent(name, argv, env, cfg.root, self._child_log(logs, f"poller-{logical_id}"))

    def _stack_info(
        self,
        template: Template,
        resources: LocalResources,
        context: LocalContext,
        keys: tokens.KeyPair,
        pollers: list[str],
    ) -> StackInfo:
        table = next(iter(resources.tables.values()), None)
        return StackInfo(
            endpoint_url=self.config.endpoint_url,
            api_url=self.config.api_url,
            region=context.region,
            account_id=context.account_id,
            stack_name=context.stack_name,
            table=table.name if table else None,
            stream_arn=table.stream_arn if table else None,
            queues={lid: q.url for lid, q in resources.queues.items()},
            jwt_public_key_file=str(keys.public_key_file),
            jwt_issuer=tokens.ISSUER,
            jwt_audience=tokens.AUDIENCE,
            stream_pollers=pollers,
            resources=resources.to_dict(),
        )


def stream_triggered_functions(template: Template) -> list[str]:
    """Functions with a ``Type: DynamoDB`` event in the template: each gets a stream poller."""
    return [
        logical_id
        for logical_id in template.resources_of_type(*FUNCTION_TYPES)
        if any(e.get("Type") == "DynamoDB" for e in (template.function_properties(logical_id).get("Events") or {}).values())
    ]


def read_stack_info(root: Path | None = None) -> StackInfo | None:
    data = paths.read_stack_file(root)
    return StackInfo(**data) if data else None
