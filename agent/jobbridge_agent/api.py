"""The agent's client of the API's /agent routes: the runner's ``Lifecycle`` over HTTPS.

The state machine runs server side (functions/api/jobbridge_api/routes/agent.py); this client
only carries the runner's calls there and maps the answers back to the runner's vocabulary:

    200              -> the job (jobbridge.models.Job)
    404              -> JobNotFound
    409              -> InvalidTransition (claim refused) | StaleAttempt (fenced out)
    heartbeat lease_owned=false -> StaleAttempt (the lease is lost: abandon the job)
    429, 5xx, network errors -> retried with backoff and full jitter, then DependencyUnavailable
    401, 403         -> NotAuthorized (a DependencyUnavailable: the job is not lost, the operator must act)

Only the standard library: http.client with kept-alive connections (one per concurrent caller,
pooled). Authentication is a Bearer token, or SigV4 for API Gateway's IAM authorization
(botocore's SigV4Auth, service ``execute-api``) with credentials from the default chain, where
IAM Roles Anywhere's credential helper supplies temporary ones through ``credential_process``.
https://docs.aws.amazon.com/rolesanywhere/latest/userguide/credential-helper.html
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import math
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import SplitResult, quote, unquote, urlsplit

from jobbridge.errors import DependencyUnavailable, InvalidTransition, JobNotFound, StaleAttempt, TooLarge
from jobbridge.limits import check_result
from jobbridge.models import AgentBeatAnswer, AgentJob, Job, JobError, JobPublic, Progress

from .backoff import Backoff

log = logging.getLogger("jobbridge_agent.api")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
PROBE_JOB_ID = "job_" + "0" * 26  # well-formed, never issued: the credential check's 404
_MIN_LEASE_S, _MAX_LEASE_S = 10, 43_200


class NotAuthorized(DependencyUnavailable):
    """The API refused the agent's credential (401/403)."""


# --- authentication ------------------------------------------------------------------------------


class Auth(Protocol):
    def headers(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        """Headers to add to a request (computed per request: a signature covers the body)."""


class BearerToken:
    """A fixed token, or a token file re-read whenever it changes (rotation without a restart)."""

    def __init__(self, token: str | None = None, token_file: Path | None = None) -> None:
        if (token is None) == (token_file is None):
            raise ValueError("give exactly one of token or token_file")
        self._token = token.strip() if token else None
        self._file = token_file
        self._mtime: float | None = None
        self._lock = threading.Lock()

    def current(self) -> str:
        if self._file is None:
            return self._token or ""
        with self._lock:
            mtime = self._file.stat().st_mtime
            if mtime != self._mtime:
                self._token = self._file.read_text(encoding="utf-8").strip()
                self._mtime = mtime
            return self._token or ""

    def headers(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.current()}"}


class SigV4:
    """Signs each request for API Gateway's IAM authorization (execute-api)."""

    def __init__(self, credentials: Any, region: str, service: str = "execute-api") -> None:
        self._credentials = credentials  # botocore (Refreshable)Credentials: refreshed when near expiry
        self._region = region
        self._service = service

    def headers(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        request = AWSRequest(method=method, url=url, data=body, headers=dict(headers))
        SigV4Auth(self._credentials.get_frozen_credentials(), self._service, self._region).add_auth(request)
        return {k: v for k, v in request.headers.items() if k.lower() in ("authorization", "x-amz-date", "x-amz-security-token")}


# --- connections ---------------------------------------------------------------------------------


class _Pool:
    """Idle kept-alive connections; each caller takes one for one request and gives it back."""

    def __init__(self, factory: Callable[[], http.client.HTTPConnection], max_idle: int) -> None:
        self._factory = factory
        self._max_idle = max_idle
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def take(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._factory(), False

    def give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class AgentApi:
    """The /agent routes, as the runner's Lifecycle. Thread-safe."""

    def __init__(
        self,
        base_url: str,
        auth: Auth,
        *,
        timeout_s: float = 10.0,
        max_attempts: int = 4,
        backoff: Backoff = Backoff(0.5, 8.0),
        ca_file: Path | None = None,
        proxy_url: str | None = None,
        max_idle: int = 16,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(base_url)
        self.base_url = base_url.rstrip("/")
        self._scheme = parts.scheme
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._netloc = parts.netloc
        self._prefix = parts.path.rstrip("/")
        self._auth = auth
        self._timeout = timeout_s
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._sleep = sleep
        self._proxy = urlsplit(proxy_url) if proxy_url else None
        self._ssl = ssl.create_default_context(cafile=str(ca_file) if ca_file else None) if parts.scheme == "https" else None
        self._pool = _Pool(self._connect, max_idle)
        self._jobs: dict[str, Job] = {}  # claimed jobs: a heartbeat's answer is not a whole job
        self._jobs_lock = threading.Lock()

    # --- the Lifecycle protocol -------------------------------------------------------------

    def claim(self, job_id: str, owner: str, lease_s: float, expected_attempt: int | None = None,
              claim_token: str | None = None) -> Job:
        """``owner`` is informational: the API names the owner after the agent's credential.
        ``claim_token`` lets the API recognise a retry of a claim whose answer was lost."""
        if expected_attempt is None:
            raise ValueError("the agent claims with the attempt in the queue message")
        body: dict[str, Any] = {"attempt": expected_attempt, "lease_s": _lease(lease_s)}
        if claim_token is not None:
            body["claim_token"] = claim_token
        data = self._post("claim", job_id, body)
        job = Job.model_validate(AgentJob.model_validate(data).model_dump())
        with self._jobs_lock:
            self._jobs[job_id] = job
        return job

    def heartbeat(self, job_id: str, attempt: int, owner: str, lease_s: float, progress: Progress | None = None) -> Job:
        body: dict[str, Any] = {"attempt": attempt, "lease_s": _lease(lease_s)}
        if progress is not None:
            body["progress"] = progress.model_dump()
        answer = AgentBeatAnswer.model_validate(self._post("heartbeat", job_id, body))
        if not answer.lease_owned:
            self._forget(job_id)
            raise StaleAttempt(job_id, "heartbeat", answer.state.value if answer.state else None,
                               f"attempt {attempt} no longer owns the lease")
        with self._jobs_lock:
            known = self._jobs.get(job_id)
            update = {"cancel_requested": answer.cancel_requested, "lease_expires_at": answer.lease_expires_at}
            if answer.state is not None:
                update["state"] = answer.state
            if progress is not None:
                update["progress"] = progress
            if known is not None:
                self._jobs[job_id] = known = known.model_copy(update=update)
        if known is None:  # not claimed through this client: what the answer tells
            return Job.model_validate({"job_id": job_id, "tenant": "", "type": "", "route": "private", "created_at": "",
                                       "attempt": attempt, **update, "state": answer.state or "RUNNING"})
        return known

    def complete(self, job_id: str, attempt: int, result: Any) -> Job:
        # The same limit as JobLifecycle.complete (the result's share of the record, well under the
        # API's body limit), checked here too so that an oversized result is not sent at all.
        try:
            check_result(result)
        except TooLarge as exc:
            return self.fail(job_id, attempt, JobError(type="ResultTooLarge", message=f"the result {exc}"))
        except (TypeError, ValueError) as exc:
            return self.fail(job_id, attempt, JobError(type="ResultNotJSON", message=f"the result is not JSON: {exc}"))
        return self._settled(job_id, self._post("complete", job_id, {"attempt": attempt, "result": result}))

    def fail(self, job_id: str, attempt: int, error: JobError, max_attempts: int | None = None,
             job_type: str | None = None) -> Job:
        """The API applies the job type's retry policy (``max_attempts``/``job_type`` are ignored)."""
        body = {"attempt": attempt, "error": error.model_dump(include={"type", "message", "retryable"})}
        return self._settled(job_id, self._post("fail", job_id, body))

    def acknowledge_cancel(self, job_id: str, attempt: int, *, forced: bool = False) -> Job:
        # ``forced`` is not sent: the agent stops an ignoring job by killing its process, and the
        # cancellation it reports is the same either way.
        return self._settled(job_id, self._post("cancelled", job_id, {"attempt": attempt}))

    def release(self, job_id: str, attempt: int, reason: str) -> Job:
        """Hand the job back unfinished (the agent shuts down): QUEUED again, no run spent. The API
        records the reason as the agent's shutdown; ``reason`` is logged here."""
        log.info("releasing the job", extra={"job_id": job_id, "attempt": attempt, "reason": reason})
        return self._settled(job_id, self._post("release", job_id, {"attempt": attempt}))

    # --- start-up check ----------------------------------------------------------------------

    def probe(self) -> None:
        """Check that the API answers and accepts the credential: a claim of an id never issued is
        a 404 once authenticated. Raises NotAuthorized (401/403) or DependencyUnavailable."""
        try:
            self._post("claim", PROBE_JOB_ID, {"attempt": 0, "lease_s": _MIN_LEASE_S}, attempts=1)
        except JobNotFound:
            return

    def close(self) -> None:
        self._pool.close()

    # --- plumbing -----------------------------------------------------------------------------

    def _settled(self, job_id: str, data: dict[str, Any]) -> Job:
        public = JobPublic.model_validate(data)
        known = self._forget(job_id)
        return Job.model_validate({**public.model_dump(), "tenant": known.tenant if known else ""})

    def _forget(self, job_id: str) -> Job | None:
        with self._jobs_lock:
            return self._jobs.pop(job_id, None)

    def _post(self, action: str, job_id: str, body: dict[str, Any], attempts: int | None = None) -> dict[str, Any]:
        path = f"{self._prefix}/agent/jobs/{quote(job_id, safe='')}/{action}"
        payload = _json_body(body)
        attempts = attempts or self._max_attempts
        last = ""
        for attempt_no in range(1, attempts + 1):
            try:
                status, headers, data = self._request("POST", path, payload)
            except (OSError, http.client.HTTPException) as exc:
                last = f"{type(exc).__name__}: {exc}"
                retry_after = None
            else:
                if 200 <= status < 300:
                    return _json(data)
                if status not in RETRY_STATUSES:
                    raise self._error(status, data, action, job_id)
                last = f"HTTP {status}"
                retry_after = _retry_after(headers.get("retry-after"))
            if attempt_no == attempts:
                break
            delay = self._backoff.delay(attempt_no)
            if retry_after is not None:
                delay = max(delay, min(retry_after, self._backoff.cap_s))
            log.debug("API call failed; retrying", extra={"job_id": job_id, "action": action, "error": last,
                                                          "retry_in_s": round(delay, 3)})
            self._sleep(delay)
        raise DependencyUnavailable("api", f"{action}: {last}")

    def _request(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        headers = {"Host": self._netloc, "Content-Type": "application/json", "Accept": "application/json"}
        headers.update(self._auth.headers(method, f"{self._scheme}://{self._netloc}{path}", body, headers))
        for fresh_retry in (False, True):
            conn, reused = self._pool.take()
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                # A kept-alive connection the server closed while idle: the request never reached
                # it, so one immediate retry on a new connection is safe and expected.
                if reused and not fresh_retry:
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                self._pool.give_back(conn)
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        raise AssertionError("unreachable")

    def _connect(self) -> http.client.HTTPConnection:
        if self._proxy is not None:
            # The connection class follows the API's scheme, never the proxy's: to an https API the
            # request is TLS end to end inside the CONNECT tunnel (HTTPSConnection connects to the
            # proxy over TCP, sends CONNECT, then starts TLS with the API's name and our CA file),
            # so the proxy sees the target host and port and nothing else.
            conn = _connection(self._scheme, self._proxy.hostname or "", self._proxy.port or 3128, self._timeout,
                               self._ssl)
            conn.set_tunnel(self._host, self._port, headers=_proxy_authorization(self._proxy))
            return conn
        return _connection(self._scheme, self._host, self._port, self._timeout, self._ssl)

    def _error(self, status: int, data: bytes, action: str, job_id: str) -> Exception:
        detail = _detail(data)
        if status == 404:
            return JobNotFound(job_id)
        if status == 409:
            # The server's reason (the state it found) is in the problem's detail: carried as is.
            refused = (InvalidTransition if action == "claim" else StaleAttempt)(job_id, action, None)
            refused.args = (f"the API refused {action}: {detail}",)
            return refused
        if status in (401, 403):
            return NotAuthorized("api", f"{action}: HTTP {status}: {detail}")
        # 400/413/422: a request this client should not have made; retrying cannot help.
        log.error("API refused a request", extra={"job_id": job_id, "action": action, "status": status, "detail": detail})
        return DependencyUnavailable("api", f"{action}: HTTP {status}: {detail}")


def _json_body(body: dict[str, Any]) -> bytes:
    """UTF-8 JSON (RFC 8259 section 8.1), as the record's budget measures a result: \\u-escaped, a
    result of emoji within its share would be three times over the API's body limit. Text that is
    not UTF-8 at all (a lone surrogate in an error message) goes escaped, for the API to judge."""
    try:
        return json.dumps(body, separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(body, separators=(",", ":"), allow_nan=False).encode()


def _connection(scheme: str, host: str, port: int, timeout: float, context: ssl.SSLContext | None) -> http.client.HTTPConnection:
    if scheme == "https":
        return http.client.HTTPSConnection(host, port, timeout=timeout, context=context or ssl.create_default_context())
    return http.client.HTTPConnection(host, port, timeout=timeout)


def _proxy_authorization(proxy: SplitResult) -> dict[str, str]:
    """Basic proxy authentication from ``http://user:pass@proxy:port`` (percent-decoded), sent on the
    CONNECT only: the API never sees it. https://www.rfc-editor.org/rfc/rfc9110#name-proxy-authorization"""
    if proxy.username is None:
        return {}
    user_pass = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
    return {"Proxy-Authorization": "Basic " + base64.b64encode(user_pass.encode()).decode()}


def _lease(lease_s: float) -> int:
    return max(_MIN_LEASE_S, min(_MAX_LEASE_S, int(math.ceil(lease_s))))


def _json(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data or b"{}")
    except ValueError as exc:
        raise DependencyUnavailable("api", f"the answer is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise DependencyUnavailable("api", "the answer is not a JSON object")
    return value


def _detail(data: bytes) -> str:
    try:
        value = json.loads(data)
    except ValueError:
        return data[:200].decode("utf-8", "replace")
    if isinstance(value, dict):
        return str(value.get("detail") or value.get("title") or value)[:500]
    return str(value)[:500]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def credentials_from_default_chain(session: Any = None) -> Any:
    """The default chain's credentials (env, shared config incl. ``credential_process``, instance
    roles), or None. Refreshable ones renew themselves before they expire."""
    import boto3

    return (session or boto3.session.Session()).get_credentials()


__all__ = ["AgentApi", "BearerToken", "SigV4", "NotAuthorized", "credentials_from_default_chain"]
