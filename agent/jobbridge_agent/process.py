"""Run a job's function in a child process, so that a job that ignores its stop can be killed.

The runner (jobbridge.runner) stays in the agent process: it claims, heartbeats, watches the
timeout and settles. Only the function moves: ``ProcessExecutor`` is the runner's ``execute``
hook. Stopping is cooperative first, forcible after ``kill_grace_s``:

    agent (runner + ProcessExecutor)                   child process (own process group)
      ctx says cancel / timeout / lease lost,  ──stop──>  ctx.cancelled() is true; ctx.sleep(),
      or the agent is shutting down                       ctx.progress() raise at the next checkpoint
      no answer within kill_grace_s            ──SIGKILL to the child's process group──>
      <── progress, done(result JSON), stopped, failed(type, message, retryable) ──

The child is the leader of its own process group: a Ctrl-C in the terminal reaches only the
agent (which then drains), and a forced stop also kills whatever the job started (ffmpeg, ...).
If the agent dies (kill -9), the child sees its pipe close and kills its group at once: no
orphaned job keeps running beside the attempt that replaces it.

Child processes start from a fork server that has imported the job modules once
(``forkserver``; https://docs.python.org/3/library/multiprocessing.html#contexts-and-start-methods):
starting a job costs a fork, not an interpreter, and no thread state of the agent leaks into it.
"""

from __future__ import annotations

import errno
import json
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from typing import Any, Callable

from jobbridge.errors import JobBridgeError, JobCancelled, JobFailure, RetryableError, WorkerShutdown
from jobbridge.registry import JobType
from jobbridge.runner import JobTimeout, LeaseLost

log = logging.getLogger("jobbridge_agent.process")

# Why the agent asks a job to stop. "shutdown": the agent is draining and the grace period is
# over; "force": a second signal (kill at once, report nothing).
CANCEL, TIMEOUT, LEASE_LOST, SHUTDOWN, FORCE = "cancel", "timeout", "lease_lost", "shutdown", "force"
AgentStop = Callable[[], "str | None"]


class AgentShutdown(WorkerShutdown):
    """The agent stopped the attempt on its way down: released, and run at once elsewhere."""


class JobProcessDied(RetryableError):
    """The job's process ended without reporting (killed by the OS, a crash in native code)."""


def _remote_failure(type_name: str, message: str, retryable: bool) -> JobFailure:
    """The child's exception as the runner should record it: same type name, message, retryability."""
    cls = type(type_name if type_name.isidentifier() else "JobError", (JobFailure,), {"retryable": retryable})
    return cls(message)


class ProcessExecutor:
    """The runner's ``execute``: one child process per attempt (see the module docstring)."""

    def __init__(
        self,
        *,
        job_modules: tuple[str, ...] = (),
        kill_grace_s: float = 10.0,
        agent_stop: AgentStop = lambda: None,
        context: Any = None,
        log_level: str = "INFO",
        poll_s: float = 0.1,
        on_start: Callable[[int], None] = lambda pid: None,
        on_exit: Callable[[int], None] = lambda pid: None,
    ) -> None:
        self.job_modules = job_modules
        self.kill_grace_s = kill_grace_s
        self.agent_stop = agent_stop
        self.context = context or multiprocessing.get_context("spawn")
        self.log_level = log_level
        self.poll_s = poll_s
        self._on_start = on_start
        self._on_exit = on_exit

    def __call__(self, job_type: JobType, params: Any, ctx: Any) -> Any:
        spec = {
            "job_id": ctx.job_id,
            "attempt": ctx.attempt,
            "type": job_type.name,
            "params": params.model_dump(mode="json", by_alias=True),
            "modules": list(self.job_modules),
            "remaining_s": ctx.remaining_s(),
            "log_level": self.log_level,
        }
        mine, theirs = self.context.Pipe(duplex=True)
        process = self.context.Process(target=child_main, args=(theirs, spec), name=f"job-{ctx.job_id}")
        process.start()
        theirs.close()
        log.info("job process started", extra={"job_id": ctx.job_id, "attempt": ctx.attempt, "pid": process.pid})
        self._on_start(process.pid)
        try:
            return self._supervise(process, mine, ctx)
        finally:
            mine.close()
            _reap(process, self.kill_grace_s)
            self._on_exit(process.pid)

    # --- the parent's loop ------------------------------------------------------------------

    def _supervise(self, process: Any, conn: Connection, ctx: Any) -> Any:
        reason: str | None = None
        asked_at = 0.0
        while True:
            message = _receive(conn, self.poll_s)
            if message is _CLOSED or (message is None and not process.is_alive() and not conn.poll(0)):
                process.join(1.0)
                if reason is not None:
                    raise _stopped(reason, ctx.job_id)
                raise JobProcessDied(f"the job's process exited with code {process.exitcode} before reporting")
            if message is not None:
                kind = message[0]
                if kind == "progress":
                    _forward_progress(ctx, message[1], message[2])
                    continue
                if kind == "done":
                    return json.loads(message[1])  # finished, even if a stop was on its way
                if kind == "stopped":
                    raise _stopped(reason or message[1], ctx.job_id)
                if kind == "failed":
                    if reason is not None:
                        raise _stopped(reason, ctx.job_id)
                    raise _remote_failure(message[1], message[2], message[3])
                continue
            wanted = self._reason(ctx)
            if wanted == FORCE:
                _kill_group(process)
                raise _stopped(FORCE, ctx.job_id)
            if reason is None and wanted is not None:
                reason, asked_at = wanted, time.monotonic()
                log.info("asking the job to stop", extra={"job_id": ctx.job_id, "attempt": ctx.attempt,
                                                           "reason": reason, "kill_after_s": self.kill_grace_s})
                _send(conn, ("stop", reason))
            elif reason is not None and time.monotonic() - asked_at >= self.kill_grace_s:
                log.warning("the job ignored the stop; killing its process",
                            extra={"job_id": ctx.job_id, "attempt": ctx.attempt, "reason": reason, "pid": process.pid})
                _kill_group(process)
                raise _stopped(reason, ctx.job_id)

    def _reason(self, ctx: Any) -> str | None:
        agent = self.agent_stop()
        if agent == FORCE:
            return FORCE
        try:
            ctx.raise_if_stopping()
        except LeaseLost:
            return LEASE_LOST
        except JobCancelled:
            return CANCEL
        except JobTimeout:
            return TIMEOUT
        return SHUTDOWN if agent == SHUTDOWN else None


_CLOSED = object()


def _receive(conn: Connection, timeout: float) -> Any:
    try:
        if conn.poll(timeout):
            return conn.recv()
    except (EOFError, OSError):
        return _CLOSED
    return None


def _send(conn: Connection, message: tuple) -> None:
    try:
        conn.send(message)
    except (OSError, ValueError):
        pass  # the child is gone: the loop sees it


def _forward_progress(ctx: Any, fraction: float, message: str) -> None:
    try:
        ctx.progress(fraction, message)
    except (JobCancelled, JobTimeout, LeaseLost):
        pass  # stopping: the loop handles it


def _stopped(reason: str, job_id: str) -> BaseException:
    if reason == CANCEL:
        return JobCancelled(job_id)
    if reason == TIMEOUT:
        return JobTimeout(job_id)
    if reason == SHUTDOWN:
        return AgentShutdown("the agent shut down before the job finished")
    return LeaseLost(job_id)  # lease lost, or forced: stop without reporting


def _kill_group(process: Any) -> None:
    """SIGKILL the child's process group (the child and what it started)."""
    pid = process.pid
    if pid is None:
        return
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    except PermissionError:
        process.kill()
    except OSError as exc:  # not a group leader yet (killed before it called setpgrp)
        if exc.errno != errno.ESRCH:
            process.kill()
    if process.is_alive():
        process.kill()


def _reap(process: Any, grace_s: float) -> None:
    process.join(max(1.0, grace_s))
    if process.is_alive():
        _kill_group(process)
        process.join(5.0)
    else:
        # The job is over: anything it left running in its group goes with it.
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except OSError:
            pass


def kill_process_group(pid: int) -> None:
    """For the agent's last resort on its way out."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# --- the child ----------------------------------------------------------------------------------


class _ChildContext:
    """The job function's ``ctx`` in the child (jobbridge.context.JobContext)."""

    def __init__(self, conn: Connection, job_id: str, attempt: int, remaining_s: float, logger: Any) -> None:
        self.job_id = job_id
        self.attempt = attempt
        self.logger = logger
        self._conn = conn
        self._send_lock = threading.Lock()
        self._deadline = time.monotonic() + remaining_s
        self._stop = threading.Event()
        self.reason: str | None = None

    def stop(self, reason: str) -> None:
        self.reason = reason
        self._stop.set()

    def progress(self, fraction: float, message: str = "") -> None:
        self.raise_if_stopping()
        self.send(("progress", min(1.0, max(0.0, float(fraction))), str(message)[:1024]))

    def cancelled(self) -> bool:
        return self._stop.is_set()

    def remaining_s(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def raise_if_stopping(self) -> None:
        if self._stop.is_set():
            if self.reason == TIMEOUT:
                raise JobTimeout(self.job_id)
            if self.reason in (LEASE_LOST, FORCE):
                raise LeaseLost(self.job_id)
            raise JobCancelled(self.job_id)  # cancel, or the agent shutting down
        if time.monotonic() >= self._deadline:
            raise JobTimeout(self.job_id)

    raise_if_cancelled = raise_if_stopping

    def sleep(self, seconds: float) -> None:
        end = time.monotonic() + max(0.0, seconds)
        while True:
            self.raise_if_stopping()
            left = min(end, self._deadline) - time.monotonic()
            if left <= 0:
                if time.monotonic() >= end:
                    return
                continue  # the deadline passed: raise_if_stopping raises JobTimeout
            self._stop.wait(left)

    def send(self, message: tuple) -> None:
        with self._send_lock:
            try:
                self._conn.send(message)
            except (OSError, ValueError):
                _parent_gone()


def _parent_gone() -> None:
    # The agent died: stop this job and everything it started, now. Its lease lapses and the
    # job is retried elsewhere; a result nobody can report is worth nothing.
    try:
        os.killpg(0, signal.SIGKILL)
    finally:
        os._exit(70)


def _listen(conn: Connection, ctx: _ChildContext) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            _parent_gone()
            return
        if message and message[0] == "stop":
            ctx.stop(message[1])


def child_main(conn: Connection, spec: dict[str, Any]) -> None:
    """The child's entry point (must be importable: multiprocessing pickles a reference to it)."""
    try:
        os.setpgrp()
    except OSError:
        pass
    from .jsonlog import configure_logging  # the child is its own program: it logs like the agent

    configure_logging(spec.get("log_level", "INFO"))
    logger = logging.LoggerAdapter(logging.getLogger("jobbridge.job"),
                                   {"job_id": spec["job_id"], "attempt": spec["attempt"], "pid": os.getpid()})
    ctx = _ChildContext(conn, spec["job_id"], spec["attempt"], float(spec["remaining_s"]), logger)
    threading.Thread(target=_listen, args=(conn, ctx), name="stop-listener", daemon=True).start()
    try:
        from jobbridge.dynamo_codec import dump_json
        from jobbridge.registry import load_registry

        job_type = load_registry(tuple(spec["modules"])).get(spec["type"])
        params = job_type.parse_params(spec["params"])
        value = job_type.func(params, ctx)
        try:
            text = dump_json(value)
        except (TypeError, ValueError) as exc:
            ctx.send(("failed", "ResultNotJSON", f"the result is not JSON: {exc}", False))
        else:
            ctx.send(("done", text))
    except JobCancelled:
        ctx.send(("stopped", ctx.reason or CANCEL))
    except JobTimeout:
        ctx.send(("stopped", TIMEOUT))
    except LeaseLost:
        ctx.send(("stopped", LEASE_LOST))
    except JobFailure as exc:
        ctx.send(("failed", type(exc).__name__, str(exc)[:2000], bool(exc.retryable)))
    except JobBridgeError as exc:
        ctx.send(("failed", type(exc).__name__, str(exc)[:2000], False))
    except BaseException as exc:  # noqa: BLE001 - a job's own bug (even SystemExit): recorded, retried per policy
        logger.exception("job raised")
        ctx.send(("failed", type(exc).__name__, str(exc)[:2000], True))
    # No conn.close(): the listener thread is blocked reading it. The process exits now, which
    # closes the pipe; the agent has the answer already.
