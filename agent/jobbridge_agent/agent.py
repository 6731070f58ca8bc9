"""The on-prem agent: long-polls the private queue and runs each job through the same runner as
Lambda and Batch, reporting through the API's /agent routes.

A library class with a lifecycle (signals and logging belong to the CLI)::

    agent = Agent(load_config(path, os.environ))
    agent.check()                  # ConfigError: queue, credentials, job modules, API credential
    threading.Thread(target=agent.run).start()
    ...
    agent.shutdown()               # idempotent, only sets a flag: drain within grace_s
    agent.shutdown(force=True)     # stop at once

One message, one job::

    receive (MaxNumberOfMessages = free slots) ─> claim ─refused─> delete the message
                                                    ├─API down─> hold the message (visibility pushed
                                                    │            ahead), claim again after a backoff
                                                    └─ok─> run in a child process; heartbeats extend
                                                           the lease (API) and the message's visibility
    settled (succeeded, failed, retry scheduled, cancelled) ─> delete the message
    lease lost to another agent ─> abandon: report nothing, leave the message alone
    could not report ─> message visible again (its job's lease lapses; the sweeper retries it)

On shutdown: no new receive; running jobs get ``grace_s`` to finish; then each is asked to stop
(killed after ``kill_grace_s``) and failed as retryable "AgentShutdown" through the API, so the
job is re-dispatched at once to another agent rather than waiting for its lease to lapse and the
sweeper to notice. Messages received but not claimed are made visible again.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable

from botocore.exceptions import BotoCoreError, ClientError, CredentialRetrievalError, NoCredentialsError, NoRegionError
from pydantic import ValidationError

from jobbridge.errors import DependencyUnavailable
from jobbridge.messages import JobMessage
from jobbridge.models import Job, JobError, Progress
from jobbridge.queues import Queue, return_delay_s
from jobbridge.registry import Registry, load_registry
from jobbridge.runner import Execute, Outcome, Runner, RunnerConfig, RunResult

from . import process as proc
from .api import AgentApi, BearerToken, NotAuthorized, SigV4
from .backoff import Backoff
from .config import AgentConfig, ConfigError

log = logging.getLogger("jobbridge_agent")

_QUEUE_MISSING = {"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist", "NonExistentQueue"}
_REFUSED = {"AccessDenied", "AccessDeniedException", "InvalidClientTokenId", "SignatureDoesNotMatch",
            "UnrecognizedClientException", "ExpiredToken", "InvalidAccessKeyId", "MissingAuthenticationToken"}
DRAINING, FORCED = "shutdown", "force"
# A message's visibility cannot be extended past 12 hours from its receive (ChangeMessageVisibility:
# https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-visibility-timeout.html);
# a claim held that long is released, with a margin, and costs that one receive.
HOLD_LIMIT_S = 12 * 3600 - 300


@dataclass
class _Slot:
    """One received message, from receive until its outcome is handled."""

    message_id: str
    receipt: str
    job_id: str | None = None
    stop: str | None = None  # set by the agent: "shutdown" (grace over) or "force"
    pid: int | None = None  # the job's child process, while it runs
    receives: int = 1  # ApproximateReceiveCount
    received_at: float = field(default_factory=time.monotonic)
    # The same on every try of this message's claim: one whose answer was lost is recognised.
    claim_token: str = field(default_factory=lambda: uuid.uuid4().hex)
    thread: threading.Thread | None = field(default=None, repr=False)


class MessageLease:
    """The Lifecycle of one message's run: the API client, plus the message's visibility pushed
    ahead on every heartbeat (including a failed one: the job runs on through an API outage).
    Not after the lease is lost: the message is then left alone."""

    def __init__(self, api: Any, queue: Queue, receipt: str, visibility_s: int, min_interval_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.queue = queue
        self.receipt = receipt
        self.visibility_s = visibility_s
        self.min_interval_s = min_interval_s
        self._clock = clock
        self._extended_at = clock()  # the receive set the visibility

    def claim(self, job_id: str, owner: str, lease_s: float, expected_attempt: int | None = None,
              claim_token: str | None = None) -> Job:
        try:
            return self.api.claim(job_id, owner, lease_s, expected_attempt, claim_token=claim_token)
        except NotAuthorized as exc:
            _refused(job_id, exc)
            raise

    def heartbeat(self, job_id: str, attempt: int, owner: str, lease_s: float, progress: Progress | None = None) -> Job:
        try:
            job = self.api.heartbeat(job_id, attempt, owner, lease_s, progress)
        except DependencyUnavailable as exc:
            if isinstance(exc, NotAuthorized):
                _refused(job_id, exc)
            self.extend(job_id)
            raise
        self.extend(job_id)
        return job

    def complete(self, job_id: str, attempt: int, result: Any) -> Job:
        return self.api.complete(job_id, attempt, result)

    def fail(self, job_id: str, attempt: int, error: JobError, max_attempts: int | None = None,
             job_type: str | None = None) -> Job:
        return self.api.fail(job_id, attempt, error, max_attempts, job_type)

    def acknowledge_cancel(self, job_id: str, attempt: int, *, forced: bool = False) -> Job:
        return self.api.acknowledge_cancel(job_id, attempt)  # the agent reports a cancel the same either way

    def release(self, job_id: str, attempt: int, reason: str) -> Job:
        return self.api.release(job_id, attempt, reason)

    def extend(self, job_id: str) -> bool:
        """ChangeMessageVisibility, at most once per ``min_interval_s`` (progress beats are frequent)."""
        now = self._clock()
        if now - self._extended_at < self.min_interval_s:
            return False
        try:
            self.queue.change_visibility(self.receipt, self.visibility_s)
        except DependencyUnavailable as exc:
            # SQS down, or past SQS's 12 h limit: the message may come back while the job runs.
            # Harmless: another agent's claim is refused (the job is RUNNING) and it deletes it.
            log.warning("could not extend the message's visibility", extra={"job_id": job_id, "error": str(exc)})
            return False
        self._extended_at = now
        return True


def _claim_not_made(result: RunResult) -> bool:
    """The claim's call failed (no answer, 429/5xx, a refused credential): the job is still
    QUEUED, or RUNNING under a claim whose answer was lost (the API recognises it on the next try)."""
    return result.outcome is Outcome.UNSETTLED and result.attempt == 0


def _refused(job_id: str, exc: NotAuthorized) -> None:
    # Not an outage: the credential expired or was revoked. Jobs wait (nothing is lost), but an
    # operator has to act: say so loudly.
    log.error("the API refused the agent's credential", extra={"job_id": job_id, "error": exc.detail})


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        api: Any = None,
        queue: Queue | None = None,
        poll_queue: Queue | None = None,
        registry: Registry | None = None,
        execute_factory: Callable[[_Slot], Execute] | None = None,
        session: Any = None,
        sqs_client: Any = None,
        backoff: Backoff = Backoff(1.0, 30.0),
    ) -> None:
        self.config = config
        self._api = api
        self._queue = queue
        self._poll_queue = poll_queue
        self._registry = registry
        self._execute_factory = execute_factory
        self._session = session
        self._sqs_client = sqs_client
        self._backoff = backoff
        self._lock = threading.Lock()
        self._slots: dict[str, _Slot] = {}
        self._stop: str | None = None  # None, DRAINING or FORCED: plain assignments, safe from a signal handler
        self._stop_at: float | None = None
        self._api_failures = 0
        self._api_retry_at = 0.0
        self._checked = False
        self.runner_config = RunnerConfig(
            owner=config.owner,
            lease_s=float(config.lease_s),
            heartbeat_s=config.heartbeat_s,
            progress_flush_s=min(2.0, config.heartbeat_s),
            # The executor stops a job past its timeout (killing it after kill_grace_s); the
            # runner's watchdog is the backstop after that.
            timeout_grace_s=config.kill_grace_s + 5.0,
            # Likewise for a cancel: the executor kills an ignoring job after kill_grace_s.
            cancel_grace_s=config.kill_grace_s + 5.0,
            settle_retries=config.settle_retries,
        )

    # --- lifecycle ------------------------------------------------------------------------------

    def check(self) -> None:
        """Build the clients and check what would make every job fail: raises ConfigError.

        An unreachable API or SQS endpoint is not an error here (the agent waits for them); a
        queue that does not exist, a refused credential or an unknown job module is.
        """
        cfg = self.config
        if self._registry is None:
            try:
                self._registry = load_registry(cfg.job_modules)
            except ImportError as exc:
                raise ConfigError(f"job_modules: {exc.__cause__ or exc}") from None
            except Exception as exc:  # noqa: BLE001 - an operator's module that fails to import
                raise ConfigError(f"job_modules: importing them failed: {type(exc).__name__}: {exc}") from None
        region = cfg.resolved_region(self._session_region())
        if self._queue is None or self._poll_queue is None:
            sqs = self._sqs_client or self._client("sqs", region, read_timeout=5)
            poll = self._client("sqs", region, read_timeout=cfg.wait_s + 10) if self._sqs_client is None else sqs
            self._queue = self._queue or Queue(cfg.queue_url, client=sqs)
            self._poll_queue = self._poll_queue or Queue(cfg.queue_url, client=poll)
        self._check_queue()
        if self._api is None:
            self._api = self._build_api(region)
        try:
            self._api.probe()
        except NotAuthorized as exc:
            raise ConfigError(f"the API refused the agent's credential: {exc.detail}") from None
        except DependencyUnavailable as exc:
            log.warning("the API is not reachable yet; jobs wait until it is", extra={"error": str(exc)})
        self._checked = True

    def run(self) -> int:
        """Receive and run jobs until ``shutdown()``, then drain. Returns 0 after a graceful
        shutdown, 1 after a forced one."""
        if not self._checked:
            self.check()
        cfg = self.config
        log.info("agent started", extra={"agent_id": cfg.agent_id, "queue_url": cfg.queue_url, "api_url": cfg.api_url,
                                         "concurrency": cfg.concurrency, "lease_s": cfg.lease_s,
                                         "heartbeat_s": cfg.heartbeat_s, "job_types": self._registry.names()})
        receiver = threading.Thread(target=self._receive_loop, name="receiver", daemon=True)
        receiver.start()
        while self._stop is None:
            time.sleep(0.2)
        return self._drain(receiver)

    def shutdown(self, force: bool = False) -> None:
        """Stop receiving and drain (``force``: stop at once). Idempotent; only sets flags."""
        if self._stop_at is None:
            self._stop_at = time.monotonic()
        if force:
            self._stop = FORCED
        elif self._stop is None:
            self._stop = DRAINING

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._slots)

    def free_slots(self) -> int:
        with self._lock:
            return max(0, self.config.concurrency - len(self._slots))

    # --- receiving ------------------------------------------------------------------------------

    def _receive_loop(self) -> None:
        failures = 0
        while self._stop is None:
            try:
                free = self.free_slots()
                if free == 0:
                    time.sleep(0.1)
                    continue
                wait = self._api_retry_at - time.monotonic()
                if wait > 0:  # the API is failing: leave the messages in the queue meanwhile
                    self._pause(min(wait, 1.0))
                    continue
                messages = self._poll_queue.receive(max_messages=free, wait_s=self.config.wait_s,
                                                    visibility_s=self.config.message_visibility_s)
                failures = 0
            except DependencyUnavailable as exc:
                failures += 1
                delay = self._backoff.delay(failures)
                log.warning("cannot receive from the queue; retrying", extra={"error": str(exc), "retry_in_s": round(delay, 2)})
                self._pause(delay)
                continue
            except Exception:  # noqa: BLE001 - a bug must not stop the agent; it is logged and retried
                failures += 1
                log.exception("unexpected error in the receive loop")
                self._pause(self._backoff.delay(failures))
                continue
            for message in messages:
                if self._stop is not None:
                    self._release(message["ReceiptHandle"], None, "the agent is shutting down")
                    continue
                self._start(message)

    def _pause(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while self._stop is None and time.monotonic() < end:
            time.sleep(min(0.1, max(0.0, end - time.monotonic())))

    def _start(self, message: dict[str, Any]) -> None:
        slot = _Slot(message_id=message["MessageId"], receipt=message["ReceiptHandle"],
                     receives=int((message.get("Attributes") or {}).get("ApproximateReceiveCount", 1)))
        slot.thread = threading.Thread(target=self._handle, args=(slot, message.get("Body", "")), daemon=True,
                                       name=f"job-{message['MessageId'][:8]}")
        with self._lock:
            self._slots[slot.message_id] = slot
        slot.thread.start()

    # --- one message ----------------------------------------------------------------------------

    def _handle(self, slot: _Slot, body: str) -> None:
        try:
            try:
                message = JobMessage.model_validate_json(body)
            except ValidationError:
                # Back after a short backoff (not the message's whole visibility): after maxReceiveCount
                # receives SQS moves it to the DLQ, whose handler records the failure if it names a job.
                log.error("malformed message left for the dead-letter queue", extra={"message_id": slot.message_id,
                                                                                     "body": body[:500]})
                self._release(slot.receipt, None, "malformed", visibility_s=return_delay_s(slot.receives))
                return
            slot.job_id = message.job_id
            log.info("job received", extra={"job_id": message.job_id, "message_attempt": message.attempt,
                                            "correlation_id": message.correlation_id})
            result = self._run(slot, message)
            while _claim_not_made(result):
                if not self._hold(slot, message, result):
                    return
                result = self._run(slot, message)
            self._after(slot, message, result)
        except Exception:  # noqa: BLE001 - never lose the thread silently; the message returns by itself
            log.exception("unexpected error handling a message", extra={"job_id": slot.job_id,
                                                                       "message_id": slot.message_id})
        finally:
            with self._lock:
                self._slots.pop(slot.message_id, None)

    def _run(self, slot: _Slot, message: JobMessage) -> RunResult:
        cfg = self.config
        lease = MessageLease(self._api, self._queue, slot.receipt, cfg.message_visibility_s,
                             min_interval_s=cfg.heartbeat_s / 2)
        execute = self._execute_factory(slot) if self._execute_factory else self._process_executor(slot)
        runner = Runner(lease, self._registry, self.runner_config, execute=execute)
        return runner.run(message.job_id, expected_attempt=message.attempt, correlation_id=message.correlation_id,
                          claim_token=slot.claim_token)

    def _after(self, slot: _Slot, message: JobMessage, result: RunResult) -> None:
        """What the outcome means for the message."""
        extra = {"job_id": message.job_id, "attempt": result.attempt, "outcome": result.outcome.value}
        if result.attempt:
            self._api_ok()
        if result.outcome is Outcome.ABANDONED:
            # Another agent owns the job (or it ended elsewhere): report nothing, touch nothing.
            log.warning("job abandoned: the lease belongs to another attempt", extra={**extra, "detail": result.detail})
            return
        if result.outcome is Outcome.UNSETTLED:
            # The job ran but its end could not be reported: its lease lapses and the sweeper
            # retries it. The message returns now; its claim will be refused until then.
            log.error("could not report the job's end", extra={**extra, "error": result.detail})
            self._release(slot.receipt, message.job_id, "settle failed")
            return
        self._delete(slot.receipt, message.job_id)

    def _hold(self, slot: _Slot, message: JobMessage, result: RunResult) -> bool:
        """The claim could not be made (the API is down, slow, throttling, or refused the
        credential): keep the message hidden through a backoff and try again, rather than hand it
        back. Every receive counts towards the queue's maxReceiveCount, so handing it back on every
        failed try dead-lettered queued jobs after about a minute of API outage; holding it costs
        one ChangeMessageVisibility per try and no receive. Returns False when the message was
        released instead: on shutdown, or near SQS's 12 h limit on one receive's visibility."""
        delay = self._api_failed()
        extra = {"job_id": message.job_id, "error": result.detail, "retry_in_s": round(delay, 2)}
        held_s = time.monotonic() - slot.received_at
        if held_s + delay + self.config.message_visibility_s >= HOLD_LIMIT_S:
            log.warning("held the message as long as SQS allows; releasing it", extra={**extra, "held_s": round(held_s)})
            self._release(slot.receipt, message.job_id, "held too long")
            return False
        log.warning("could not claim the job; holding its message and trying again", extra=extra)
        # Hidden past the wait and the next claim's own time (one receive's visibility).
        self._hide(slot.receipt, message.job_id, int(delay) + self.config.message_visibility_s)
        self._pause(delay)
        if self._stop is not None:
            self._release(slot.receipt, message.job_id, "the agent is shutting down")
            return False
        return True

    def _api_failed(self) -> float:
        with self._lock:
            self._api_failures += 1
            delay = max(self._backoff.base_s, self._backoff.delay(self._api_failures))
            self._api_retry_at = max(self._api_retry_at, time.monotonic() + delay)
            return delay

    def _api_ok(self) -> None:
        with self._lock:
            self._api_failures = 0
            self._api_retry_at = 0.0

    def _delete(self, receipt: str, job_id: str | None) -> None:
        for retry in range(1, 6):
            try:
                self._queue.delete(receipt)
                return
            except DependencyUnavailable as exc:
                if retry == 5 or self._stop == FORCED:
                    # It comes back; its claim is refused (the job is settled) and it is deleted then.
                    log.warning("could not delete the message", extra={"job_id": job_id, "error": str(exc)})
                    return
                time.sleep(self._backoff.delay(retry))

    def _hide(self, receipt: str, job_id: str, visibility_s: int) -> None:
        try:
            self._queue.change_visibility(receipt, visibility_s)
        except DependencyUnavailable as exc:
            # SQS is out too: the message may return and be received again (one receive counted);
            # a second copy's claim is refused once this one's lands, and it is deleted then.
            log.warning("could not keep the message hidden", extra={"job_id": job_id, "error": str(exc)})

    def _release(self, receipt: str, job_id: str | None, why: str, visibility_s: int = 0) -> None:
        try:
            self._queue.change_visibility(receipt, visibility_s)
        except DependencyUnavailable as exc:
            log.warning("could not release the message; it returns when its visibility lapses",
                        extra={"job_id": job_id, "error": str(exc), "why": why})

    # --- job processes --------------------------------------------------------------------------

    def _process_executor(self, slot: _Slot) -> Execute:
        def started(pid: int) -> None:
            slot.pid = pid

        def exited(pid: int) -> None:
            slot.pid = None

        return proc.ProcessExecutor(
            job_modules=self.config.job_modules,
            kill_grace_s=self.config.kill_grace_s,
            agent_stop=lambda: slot.stop,
            context=self._mp_context(),
            log_level=self.config.log_level,
            on_start=started,
            on_exit=exited,
        )

    def _mp_context(self) -> Any:
        method = self.config.start_method
        if method == "forkserver" and "forkserver" not in multiprocessing.get_all_start_methods():
            method = "spawn"
        context = multiprocessing.get_context(method)
        if method == "forkserver":
            # Imported once in the fork server: each job starts with them loaded.
            context.set_forkserver_preload(["jobbridge_agent.process", "jobbridge.jobtypes.builtin",
                                            *self.config.job_modules])
        return context

    # --- shutdown -------------------------------------------------------------------------------

    def _drain(self, receiver: threading.Thread) -> int:
        cfg = self.config
        stop_at = self._stop_at or time.monotonic()
        log.info("shutting down: no new messages", extra={"running": self.running, "grace_s": cfg.grace_s,
                                                          "forced": self._stop == FORCED})
        deadline = stop_at + cfg.grace_s
        while self.running and self._stop != FORCED and time.monotonic() < deadline:
            time.sleep(0.1)
        stopped = self._stop_running()
        if stopped and self._stop != FORCED:
            # Cooperative stop, then kill, then the report (retried through a short outage).
            end = time.monotonic() + cfg.kill_grace_s + 30.0
            while self.running and self._stop != FORCED and time.monotonic() < end:
                time.sleep(0.1)
        if self._stop != FORCED:
            # A long poll in flight may still return messages: they are released at once if it
            # returns within the grace period; otherwise they stay hidden for visibility_s.
            receiver.join(max(0.0, min(stop_at + cfg.grace_s, stop_at + cfg.wait_s + 10) - time.monotonic()))
            if receiver.is_alive():
                log.info("a receive is still in flight; messages it returns stay hidden until their visibility lapses",
                         extra={"visibility_s": cfg.message_visibility_s})
        else:
            end = time.monotonic() + 2.0
            while self.running and time.monotonic() < end:
                time.sleep(0.05)
        self._kill_leftovers()
        left = self.running
        log.info("agent stopped", extra={"stopped_jobs": stopped, "unfinished": left, "forced": self._stop == FORCED})
        if self._api is not None:
            self._api.close()
        return 1 if self._stop == FORCED else 0

    def _stop_running(self) -> int:
        level = FORCED if self._stop == FORCED else DRAINING
        with self._lock:
            slots = list(self._slots.values())
        for slot in slots:
            slot.stop = level
        if slots:
            log.warning("stopping running jobs", extra={"count": len(slots), "job_ids": [s.job_id for s in slots],
                                                        "how": "kill, report nothing" if level == FORCED else
                                                        "ask, kill after kill_grace_s, fail as retryable"})
        return len(slots)

    def _kill_leftovers(self) -> None:
        with self._lock:
            pids = [s.pid for s in self._slots.values() if s.pid]
        for pid in pids:
            proc.kill_process_group(pid)

    # --- clients --------------------------------------------------------------------------------

    def _session_region(self) -> str | None:
        return self._boto_session().region_name

    def _boto_session(self) -> Any:
        if self._session is None:
            import boto3

            self._session = boto3.session.Session()
        return self._session

    def _client(self, service: str, region: str | None, read_timeout: float) -> Any:
        from botocore.config import Config

        try:
            return self._boto_session().client(service, region_name=region, config=Config(
                retries={"mode": "standard", "max_attempts": 3}, connect_timeout=5, read_timeout=read_timeout))
        except NoRegionError:
            raise ConfigError("no AWS region: set region in the config (JOBBRIDGE_AGENT_REGION) or AWS_REGION") from None

    def _check_queue(self) -> None:
        url = self.config.queue_url
        try:
            self._queue.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        except NoCredentialsError:
            raise ConfigError("no AWS credentials for SQS: configure the default chain (IAM Roles Anywhere: "
                              "credential_process = aws_signing_helper credential-process ...)") from None
        except CredentialRetrievalError as exc:
            raise ConfigError(f"the AWS credential helper failed: {exc}") from None
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in _QUEUE_MISSING:
                raise ConfigError(f"queue_url {url}: no such queue") from None
            if code in _REFUSED:
                raise ConfigError(f"queue_url {url}: SQS refused the credentials ({code})") from None
            log.warning("could not check the queue; continuing", extra={"error": code})
        except BotoCoreError as exc:
            log.warning("SQS is not reachable yet; the agent keeps trying", extra={"error": f"{type(exc).__name__}: {exc}"})

    def _build_api(self, region: str | None) -> AgentApi:
        cfg = self.config
        if cfg.auth == "iam":
            credentials = self._boto_session().get_credentials()
            if credentials is None:
                raise ConfigError("auth = iam but no AWS credentials were found (IAM Roles Anywhere: "
                                  "credential_process in ~/.aws/config)")
            if not region:
                raise ConfigError("auth = iam needs the API's region: set region (JOBBRIDGE_AGENT_REGION)")
            auth: Any = SigV4(credentials, region)
        else:
            token = cfg.token.get_secret_value() if cfg.token else None
            auth = BearerToken(token=token, token_file=cfg.token_file)
            try:
                if not auth.current():
                    raise ConfigError("the agent token is empty")
            except OSError as exc:
                raise ConfigError(f"token_file {cfg.token_file}: {exc.strerror or exc}") from None
        return AgentApi(cfg.api_url, auth, timeout_s=cfg.request_timeout_s, max_attempts=cfg.api_max_attempts,
                        ca_file=cfg.ca_file, proxy_url=cfg.proxy_url, max_idle=2 * cfg.concurrency + 2)


__all__ = ["Agent", "MessageLease", "ConfigError"]
