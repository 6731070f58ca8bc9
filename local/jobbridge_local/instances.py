"""A function's execution environments: child processes that each run one invocation at a time.

Lambda runs every concurrent invocation of a function in its own execution environment and reuses
a warm one for the next invocation. Handlers rely on that: module-level state (Powertools'
``BatchProcessor``, ``Metrics``, clients cached with ``lru_cache``) is safe because no two
invocations share a process at once. The local SQS pollers run several batches at once, so they
invoke through this pool rather than calling the handler from several threads of one process.

Each environment is a child process (``python -m jobbridge_local.instances FD``, so it never
depends on how the parent's own ``__main__`` was started) that takes the function's environment
once (as a container does), imports the handler on its first invocation (the cold start), then
serves invocations one by one over a socket pair: the event goes in as JSON, the response comes
back as JSON (a response that is not JSON is Lambda's ``Runtime.MarshalError``). An invocation that runs past the
function's ``Timeout`` is ended as Lambda ends it: the environment is killed, the caller gets
``FunctionError("Sandbox.Timedout")``, and the next invocation starts a fresh one. Function output
goes to the parent's stdout/stderr.

Example::

    pool = FunctionInstances(LocalFunction.from_template("worker"), max_instances=2)
    pool.invoke({"Records": [...]})      # from up to two threads at once
    pool.close()
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import traceback
from multiprocessing.connection import Connection
from typing import Any

from .invoke import LocalFunction

logger = logging.getLogger(__name__)

# Pipe and process start-up overhead on top of the function's own Timeout before it is killed.
TIMEOUT_GRACE_SECONDS = 2.0
STOP_GRACE_SECONDS = 2.0


class FunctionError(Exception):
    """The invocation failed: the handler raised, timed out, or its environment died."""

    def __init__(self, error_type: str, message: str):
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class _TimedOut(Exception):
    pass


class _Environment:
    """One child process serving invocations of one function."""

    def __init__(self, function: LocalFunction, name: str):
        ours, theirs = socket.socketpair()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "jobbridge_local.instances", str(theirs.fileno()), name],
                pass_fds=[theirs.fileno()],
                env=env,
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        # The function to serve goes first; the child answers invocations from then on.
        self._conn.send((function.spec, function.endpoint_url, function.environment, function.region))

    def call(self, payload: str, timeout_s: float) -> tuple[str, Any]:
        self._conn.send(payload)
        if not self._conn.poll(timeout_s):
            raise _TimedOut()
        return self._conn.recv()

    def stop(self) -> None:
        try:
            self._conn.send(None)  # finish and exit
        except (OSError, ValueError):
            pass
        try:
            self.process.wait(STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._conn.close()


class FunctionInstances:
    """Up to ``max_instances`` execution environments of one function, started on demand."""

    def __init__(self, function: LocalFunction, max_instances: int, *, timeout_grace_s: float = TIMEOUT_GRACE_SECONDS):
        if max_instances < 1:
            raise ValueError("max_instances must be at least 1")
        self.function = function
        self.max_instances = max_instances
        self.timeout_s = function.spec.timeout + timeout_grace_s
        self._idle: list[_Environment] = []
        self._count = 0
        self._started = 0
        self._closed = False
        self._cond = threading.Condition()

    @property
    def started(self) -> int:
        """Environments started so far (cold starts), for logs and tests."""
        return self._started

    def invoke(self, event: Any) -> Any:
        """Run one invocation in an idle environment (starting one if fewer than the maximum run;
        else waiting for one). Returns the handler's response; raises FunctionError."""
        payload = json.dumps(event)
        environment = self._acquire()
        reusable = False
        try:
            try:
                kind, value = environment.call(payload, self.timeout_s)
            except _TimedOut:
                raise FunctionError(
                    "Sandbox.Timedout", f"Task timed out after {self.function.spec.timeout:.2f} seconds"
                ) from None
            except (EOFError, OSError) as exc:
                raise FunctionError("Runtime.ExitError", f"the execution environment exited ({exc})") from None
            reusable = True
            if kind == "ok":
                return json.loads(value)
            raise FunctionError(value.get("errorType", "Error"), value.get("errorMessage", ""))
        finally:
            self._release(environment, reusable)

    def close(self) -> None:
        """Stop idle environments now and busy ones when their invocation returns. Idempotent."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for environment in idle:
            environment.stop()

    def _acquire(self) -> _Environment:
        with self._cond:
            while True:
                if self._closed:
                    raise FunctionError("Local.Closed", f"{self.function.spec.logical_id} is shutting down")
                if self._idle:
                    return self._idle.pop()
                if self._count < self.max_instances:
                    self._count += 1
                    self._started += 1
                    name = f"{self.function.spec.logical_id}-env-{self._started}"
                    break
                self._cond.wait()
        try:
            logger.info("starting execution environment %s", name)
            return _Environment(self.function, name)
        except BaseException:
            with self._cond:
                self._count -= 1
                self._cond.notify()
            raise

    def _release(self, environment: _Environment, reusable: bool) -> None:
        with self._cond:
            keep = reusable and not self._closed
            if keep:
                self._idle.append(environment)
            else:
                self._count -= 1
            self._cond.notify()
        if not keep:
            environment.stop()


def serve(conn: Connection) -> None:
    """The child process: receive the function, take its environment for good, then answer
    invocations until told to stop (None) or the parent goes away."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this environment ends
    try:
        spec, endpoint_url, environment, region = conn.recv()
    except (EOFError, OSError):
        return
    function = LocalFunction(spec, endpoint_url, environment, region)
    function.adopt_environment()
    while True:
        try:
            payload = conn.recv()
        except (EOFError, OSError):
            return
        if payload is None:
            return
        try:
            response = function.invoke(json.loads(payload), isolate_environment=False)
        except Exception as exc:  # noqa: BLE001 - reported to the caller as the invocation's error
            traceback.print_exc()  # what Lambda writes to the function's log
            answer: tuple[str, Any] = ("error", {"errorType": type(exc).__name__, "errorMessage": str(exc)})
        else:
            try:
                answer = ("ok", json.dumps(response))
            except (TypeError, ValueError) as exc:
                answer = ("error", {"errorType": "Runtime.MarshalError", "errorMessage": f"Unable to marshal response: {exc}"})
        try:
            conn.send(answer)
        except (OSError, ValueError):
            return


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])))
