"""Run a function's handler in this process, as ``sam local invoke`` would in a container.

From template.yaml (via ``template.function_spec``): the handler, the environment (Globals merged,
intrinsics resolved against the local stack), the code directory and its layers' directories.
Added for the local stack only: ``AWS_ENDPOINT_URL`` (how boto3 finds moto), dummy credentials,
the region, and the variables the Lambda runtime sets (``AWS_LAMBDA_FUNCTION_NAME`` ...).

Each function's module is imported from its file under its own name (``jobbridge_fn_<LogicalId>``):
every function's file is called app.py, and a plain ``import app`` would hand the second function
the first one's module. A module is imported once per process, like a warm Lambda container.

Example::

    response = invoke("bridge", load_event("bridge_insert"))
    handler = load_handler("api")          # the callable itself, for tests
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator, Mapping

from . import paths
from .motoserver import configured_port
from .resources import DUMMY_CREDENTIALS
from .template import LOCAL_ACCOUNT_ID, LOCAL_REGION, FunctionSpec, LocalContext, Template, load_template

Handler = Callable[[Any, Any], Any]

# Variables that would make boto3 look past the local endpoint's dummy credentials (a profile the
# machine may not have, a real session token).
_SHADOWING_AWS_VARIABLES = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def default_endpoint_url() -> str:
    """The running stack's endpoint (stack.json), else 127.0.0.1:${JOBBRIDGE_AWS_PORT:-4566}."""
    state = paths.read_stack_file()
    if state and state.get("endpoint_url"):
        return str(state["endpoint_url"])
    return f"http://127.0.0.1:{configured_port()}"


def local_context(endpoint_url: str | None = None, parameters: Mapping[str, Any] | None = None) -> LocalContext:
    """A resolver context for the local stack, with the running stack's resource facts if any."""
    endpoint_url = endpoint_url or default_endpoint_url()
    state = paths.read_stack_file()
    attributes: dict[str, Any] = {}
    if state and state.get("endpoint_url") == endpoint_url:
        from .resources import LocalResources  # noqa: PLC0415 - only when a stack file exists

        attributes = LocalResources.from_dict(state["resources"]).attributes()
    return LocalContext(endpoint_url=endpoint_url, attributes=attributes, parameters=dict(parameters or {}))


def local_aws_environment(endpoint_url: str, region: str = LOCAL_REGION) -> dict[str, str]:
    """What points boto3 at the emulator: the endpoint, dummy credentials, the region."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": DUMMY_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": DUMMY_CREDENTIALS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": region,
        "AWS_REGION": region,
    }


def function_environment(
    spec: FunctionSpec, endpoint_url: str, overrides: Mapping[str, str] | None = None, region: str = LOCAL_REGION
) -> dict[str, str]:
    """The full environment a function sees locally (template's, runtime's, emulator's, overrides)."""
    runtime = {
        # Set by the Lambda runtime for every function; Powertools reads some of them.
        "AWS_LAMBDA_FUNCTION_NAME": spec.function_name,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(spec.memory_size),
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{spec.function_name}",
    }
    return {**spec.environment, **runtime, **local_aws_environment(endpoint_url, region), **dict(overrides or {})}


@contextlib.contextmanager
def environment(variables: Mapping[str, str]) -> Iterator[None]:
    """Set ``variables`` in ``os.environ`` for the block, then restore it exactly.

    os.environ is per process: two threads invoking different functions at once would see each
    other's variables. The local stack therefore runs each function's poller in its own process.
    """
    saved = dict(os.environ)
    try:
        for name in _SHADOWING_AWS_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update(variables)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


class LambdaContext:
    """The ``context`` argument of a Python Lambda handler (the attributes handlers use).

    https://docs.aws.amazon.com/lambda/latest/dg/python-context.html
    """

    def __init__(self, spec: FunctionSpec, region: str = LOCAL_REGION, account_id: str = LOCAL_ACCOUNT_ID):
        self.function_name = spec.function_name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = str(spec.memory_size)  # a string in the real runtime too
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{spec.function_name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{spec.function_name}"
        self.log_stream_name = f"{time.strftime('%Y/%m/%d')}/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = time.monotonic() + spec.timeout

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def _put_on_sys_path(directories: list[Path]) -> None:
    # Layers first, then the function's code, at the front: in Lambda /var/task (the code) comes
    # before /opt/python (layers); inserting in reverse order at 0 gives that order.
    for directory in reversed(directories):
        entry = str(directory)
        if entry not in sys.path:
            sys.path.insert(0, entry)


def import_handler_module(spec: FunctionSpec) -> ModuleType:
    module_name = f"jobbridge_fn_{spec.logical_id}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if not spec.handler_file.is_file():
        raise FileNotFoundError(f"{spec.logical_id}: handler file {spec.handler_file} does not exist")
    _put_on_sys_path([spec.code_dir, *spec.layer_dirs])
    module_spec = importlib.util.spec_from_file_location(module_name, spec.handler_file)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot import {spec.handler_file}")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


class LocalFunction:
    """One function of the template, runnable in this process."""

    def __init__(
        self,
        spec: FunctionSpec,
        endpoint_url: str,
        env_overrides: Mapping[str, str] | None = None,
        region: str = LOCAL_REGION,
    ):
        self.spec = spec
        self.endpoint_url = endpoint_url
        self.region = region
        self.environment = function_environment(spec, endpoint_url, env_overrides, region)
        self._handler: Handler | None = None

    @classmethod
    def from_template(
        cls,
        name: str,
        template: Template | None = None,
        endpoint_url: str | None = None,
        env_overrides: Mapping[str, str] | None = None,
        context: LocalContext | None = None,
    ) -> "LocalFunction":
        endpoint_url = endpoint_url or (context.endpoint_url if context else None) or default_endpoint_url()
        context = context or local_context(endpoint_url)
        spec = (template or load_template()).function_spec(name, context)
        return cls(spec, endpoint_url, env_overrides, context.region)

    @property
    def handler(self) -> Handler:
        if self._handler is None:
            # Import under the function's environment: module-level code may read it.
            with environment(self.environment):
                module = import_handler_module(self.spec)
            handler = getattr(module, self.spec.handler_attr, None)
            if not callable(handler):
                raise AttributeError(f"{self.spec.handler_file} has no callable {self.spec.handler_attr!r}")
            self._handler = handler
        return self._handler

    def invoke(self, event: Any, isolate_environment: bool = True) -> Any:
        """Call the handler with ``event`` and a fresh LambdaContext, under the function's env.

        ``isolate_environment=False`` is for a process that runs only this function and has set
        ``self.environment`` once for good (the stack's poller processes).
        """
        handler = self.handler
        if not isolate_environment:
            return handler(event, LambdaContext(self.spec, self.region))
        with environment(self.environment):
            return handler(event, LambdaContext(self.spec, self.region))

    def adopt_environment(self) -> None:
        """Make this process's environment the function's, for good (one process per function)."""
        for name in _SHADOWING_AWS_VARIABLES:
            os.environ.pop(name, None)
        os.environ.update(self.environment)


def load_handler(name: str, template: Template | None = None, endpoint_url: str | None = None) -> Handler:
    """The handler callable of function ``name`` (``bridge`` or ``BridgeFunction``), imported
    the way ``invoke`` imports it. It runs under whatever environment the caller has set."""
    return LocalFunction.from_template(name, template, endpoint_url).handler


def invoke(
    function_name: str,
    event: Any,
    env_overrides: Mapping[str, str] | None = None,
    template: Template | None = None,
    endpoint_url: str | None = None,
) -> Any:
    """Invoke function ``function_name`` once with ``event``; returns the handler's response."""
    return LocalFunction.from_template(function_name, template, endpoint_url, env_overrides).invoke(event)
