"""Fault injection into real boto3 calls, through botocore's event hooks, from outside the code
under test.

A rule names operations and a fault kind with a rate per call::

    dynamodb.PutItem:throttle=0.05,dynamodb.UpdateItem:timeout=0.02,sqs.ReceiveMessage:duplicate=0.1

``service`` is botocore's hyphenised service id (``dynamodb``, ``sqs``, ``batch``,
``dynamodb-streams``); ``service`` and ``Operation`` may be ``fnmatch`` patterns (``dynamodb.*``).
Kinds, and the botocore event each one hooks
(https://boto3.amazonaws.com/v1/documentation/api/latest/guide/events.html):

=============  ==============  ==================================================================
kind           event           what the caller's client sees
=============  ==============  ==================================================================
throttle       before-send     a 400 ThrottlingException / ProvisionedThroughputExceededException
                               for this HTTP attempt, nothing sent; botocore's retry mode retries
5xx            before-send     a 500 InternalServerError or 503 ServiceUnavailable, nothing sent;
                               botocore retries
timeout        before-send     the request IS sent and takes effect, then ReadTimeoutError for this
                               attempt; botocore retries, so a conditional write usually meets its
                               own first attempt (ConditionalCheckFailed)
timeout_final  after-call      the call succeeded, then ReadTimeoutError raised to the caller with
                               no retry left: the write took effect and the caller cannot know
duplicate      after-call /    ReceiveMessage: one message of the response repeated (an at-least-
               before-send     once redelivery); any other operation: the request is sent twice
drop           (not botocore)  ``batch.events:drop=R`` only: the local Batch's EventBridge delivery
                               drops that share of the state change events its rules match, as if
                               each had gone to the BatchEventsDLQ (``FaultInjector.decide``)
=============  ==============  ==================================================================

Every decision comes from one seeded ``random.Random`` per injector (``JOBBRIDGE_FAULTS_SEED``,
default 0, mixed with the process's command line so sibling processes differ but each repeats).
What was injected is counted per ``service.Operation:kind``, and calls per ``service.Operation``.

Two ways in, neither touching the code under test:

- in process (tests)::

      with FaultInjector.from_spec("dynamodb.PutItem:throttle=1", seed=1) as faults:
          aws.reset_clients()          # clients built from now on get the hooks
          ...
      faults.counts                    # {"dynamodb.PutItem:throttle": 3}

- in every Python process of a local stack: put ``jobbridge_faults/boot`` (its
  ``sitecustomize.py``) and this package's parent on ``PYTHONPATH`` and set ``JOBBRIDGE_FAULTS``;
  each process then hooks every client it builds and writes its counts to
  ``$JOBBRIDGE_FAULTS_DIR/<pid>.json`` (``collect_counts(dir)`` adds them up). The AWS emulator
  itself and the stack's launcher (which creates the resources) are left alone
  (``JOBBRIDGE_FAULTS_SKIP``, a regex over the command line).
"""

from __future__ import annotations

import atexit
import copy
import fnmatch
import json
import os
import random
import re
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("throttle", "5xx", "timeout", "timeout_final", "duplicate", "drop")
DEFAULT_SKIP = r"moto[/.]?server|jobbridge_local(/__main__\.py)?\s+(run|resources|token)\b"

_THROTTLE_CODES = {
    "dynamodb": "ProvisionedThroughputExceededException",
    "sqs": "ThrottlingException",
    "batch": "TooManyRequestsException",
}


@dataclass(frozen=True)
class Rule:
    service: str
    operation: str
    kind: str
    rate: float
    limit: int | None = None  # at most this many injections (``kind=rate/N``)

    def matches(self, service: str, operation: str) -> bool:
        return fnmatch.fnmatchcase(service, self.service) and fnmatch.fnmatchcase(operation, self.operation)

    def __str__(self) -> str:
        return f"{self.service}.{self.operation}:{self.kind}={self.rate:g}" + (f"/{self.limit}" if self.limit else "")


def parse_spec(spec: str) -> list[Rule]:
    """``"dynamodb.PutItem:throttle=0.05, sqs.*:5xx=0.01, dynamodb.UpdateItem:timeout=1/1"`` -> rules
    (``/N``: at most N injections by that rule). Raises ValueError."""
    rules = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        match = re.fullmatch(r"([\w*?-]+)\.([\w*?]+):(\w+)=([0-9.]+)(?:/([0-9]+))?", part)
        if not match:
            raise ValueError(f"fault rule {part!r}: expected service.Operation:kind=rate[/limit]")
        service, operation, kind, rate, limit = match.groups()
        if kind not in KINDS:
            raise ValueError(f"fault rule {part!r}: kind must be one of {', '.join(KINDS)}")
        value = float(rate)
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"fault rule {part!r}: rate must be within [0, 1]")
        rules.append(Rule(service, operation, kind, value, int(limit) if limit else None))
    return rules


class _Raw:
    """The ``raw`` of a botocore AWSResponse: what ``content`` reads."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def stream(self, **_: Any):
        yield self._body


class FaultInjector:
    """Hooks every botocore client built while installed (``install``/``uninstall`` or ``with``)."""

    def __init__(self, rules: list[Rule], seed: int | str = 0, *, counts_file: Path | None = None,
                 skip: str | None = None, mix_argv: bool = False) -> None:
        self.rules = rules
        # A regex over the process's command line, checked when the first client is built (at
        # start-up, under ``python -m``, sys.argv does not name the module yet).
        self.skip = skip
        self._skipped: bool | None = None
        self._mix_argv = mix_argv  # sibling processes of one stack draw different sequences
        self.seed = seed
        self._rng = random.Random(str(seed))
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self._fired: dict[int, int] = {}
        self.calls: dict[str, int] = {}
        self.counts_file = counts_file
        self._last_flush = 0.0
        self._clients: "weakref.WeakSet[Any]" = weakref.WeakSet()
        self._original = None
        self._http = None

    @classmethod
    def from_spec(cls, spec: str, seed: int | str = 0, **kw: Any) -> "FaultInjector":
        return cls(parse_spec(spec), seed, **kw)

    # --- installation ------------------------------------------------------------------------------

    def install(self) -> "FaultInjector":
        """Wrap botocore's ``Session.create_client`` so that every client built from now on carries
        the hooks. Clients built before are untouched (``attach`` them, or rebuild them)."""
        import botocore.session

        if self._original is not None:
            return self
        original = botocore.session.Session.create_client
        injector = self

        def create_client(session: Any, *args: Any, **kwargs: Any) -> Any:
            client = original(session, *args, **kwargs)
            injector.attach(client)
            return client

        create_client.__wrapped__ = original  # type: ignore[attr-defined]
        self._original = original
        botocore.session.Session.create_client = create_client
        return self

    def uninstall(self) -> None:
        import botocore.session

        if self._original is not None:
            botocore.session.Session.create_client = self._original
            self._original = None
        for client in list(self._clients):
            self._detach(client)
        self.flush(force=True)

    def __enter__(self) -> "FaultInjector":
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.uninstall()

    def _skipping(self) -> bool:
        if self._skipped is None:
            command = " ".join(sys.argv)
            self._skipped = bool(self.skip and re.search(self.skip, command))
            if self._mix_argv:
                with self._lock:
                    self._rng.seed(f"{self.seed}:{command}")
        return self._skipped

    def attach(self, client: Any) -> Any:
        if self._skipping():
            return client
        service = client.meta.service_model.service_id.hyphenize()
        if not any(fnmatch.fnmatchcase(service, r.service) for r in self.rules):
            return client
        uid = f"jobbridge-faults-{id(self)}"
        # First: a mocking library's own before-send handler must not answer before ours.
        client.meta.events.register_first(f"before-send.{service}", self._before_send, unique_id=uid + "-send")
        client.meta.events.register(f"after-call.{service}", self._after_call, unique_id=uid + "-after")
        self._clients.add(client)
        return client

    def _detach(self, client: Any) -> None:
        service = client.meta.service_model.service_id.hyphenize()
        uid = f"jobbridge-faults-{id(self)}"
        client.meta.events.unregister(f"before-send.{service}", unique_id=uid + "-send")
        client.meta.events.unregister(f"after-call.{service}", unique_id=uid + "-after")

    # --- decisions and counting --------------------------------------------------------------------

    def _pick(self, service: str, operation: str, kinds: tuple[str, ...]) -> str | None:
        with self._lock:
            for index, rule in enumerate(self.rules):
                if rule.kind not in kinds or not rule.matches(service, operation):
                    continue
                if rule.limit is not None and self._fired.get(index, 0) >= rule.limit:
                    continue
                if self._rng.random() < rule.rate:
                    self._fired[index] = self._fired.get(index, 0) + 1
                    return rule.kind
        return None

    def decide(self, service: str, operation: str, kind: str) -> bool:
        """A fault point outside botocore (an emulator's, e.g. the local Batch's event delivery):
        count the call, and whether a ``kind`` rule fires on it (then counted as injected)."""
        self._count_call(service, operation)
        fired = self._pick(service, operation, (kind,)) is not None
        if fired:
            self._record(service, operation, kind)
        else:
            self.flush()
        return fired

    def _count_call(self, service: str, operation: str) -> None:
        key = f"{service}.{operation}"
        with self._lock:
            self.calls[key] = self.calls.get(key, 0) + 1

    def _record(self, service: str, operation: str, kind: str) -> None:
        key = f"{service}.{operation}:{kind}"
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Write the counts to ``counts_file`` (atomically; at most twice a second unless forced)."""
        if self.counts_file is None:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last_flush < 0.5:
                return
            self._last_flush = now
            data = {"pid": os.getpid(), "argv": sys.argv, "seed": str(self.seed), "rules": [str(r) for r in self.rules],
                    "counts": dict(self.counts), "calls": dict(self.calls)}
        tmp = self.counts_file.with_suffix(f".{threading.get_ident()}.tmp")
        try:
            tmp.write_text(json.dumps(data))
            os.replace(tmp, self.counts_file)
        except OSError:
            pass  # counting must never break the process under test

    # --- the hooks ---------------------------------------------------------------------------------

    def _before_send(self, request: Any, event_name: str, **_: Any) -> Any:
        _, service, operation = event_name.split(".", 2)
        self._count_call(service, operation)
        kinds = ("throttle", "5xx", "timeout") + (() if operation == "ReceiveMessage" else ("duplicate",))
        kind = self._pick(service, operation, kinds)
        if kind is None:
            return None
        self._record(service, operation, kind)
        if kind == "throttle":
            code = _THROTTLE_CODES.get(service, "ThrottlingException")
            return self._error_response(request, 429 if service == "batch" else 400, code, "Rate exceeded (injected)")
        if kind == "5xx":
            if self._rng.random() < 0.5:
                return self._error_response(request, 500, "InternalServerError", "injected internal error")
            return self._error_response(request, 503, "ServiceUnavailable", "injected: service unavailable")
        # timeout and duplicate: the request really goes out (and takes effect) first.
        self._send(request)
        if kind == "timeout":
            from botocore.exceptions import ReadTimeoutError

            raise ReadTimeoutError(endpoint_url=request.url)
        return None  # duplicate: botocore now sends it a second time

    def _after_call(self, http_response: Any, parsed: dict[str, Any], event_name: str, **_: Any) -> None:
        if http_response is None or http_response.status_code >= 300:
            return
        _, service, operation = event_name.split(".", 2)
        kinds = ("timeout_final",) + (("duplicate",) if operation == "ReceiveMessage" else ())
        kind = self._pick(service, operation, kinds)
        if kind == "duplicate":
            messages = parsed.get("Messages") or []
            if not messages:
                return
            with self._lock:
                chosen = messages[self._rng.randrange(len(messages))]
            messages.append(copy.deepcopy(chosen))
            self._record(service, operation, kind)
        elif kind == "timeout_final":
            from botocore.exceptions import ReadTimeoutError

            self._record(service, operation, kind)
            raise ReadTimeoutError(endpoint_url=getattr(http_response, "url", "") or "")

    def _send(self, request: Any) -> None:
        from botocore.httpsession import URLLib3Session

        if self._http is None:
            self._http = URLLib3Session(max_pool_connections=20)
        try:
            self._http.send(request)
        finally:
            request.reset_stream()

    @staticmethod
    def _error_response(request: Any, status: int, code: str, message: str) -> Any:
        from botocore.awsrequest import AWSResponse

        body = json.dumps({"__type": code, "message": message, "code": code}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.0", "x-amzn-ErrorType": code,
                   "x-amzn-RequestId": "injected-fault", "Content-Length": str(len(body))}
        return AWSResponse(request.url, status, headers, _Raw(body))


# --- processes of a local stack ----------------------------------------------------------------------

_installed: FaultInjector | None = None


def install_from_env(environ: dict[str, str] | None = None) -> FaultInjector | None:
    """Install the injector ``JOBBRIDGE_FAULTS`` describes, once per process, unless the process's
    command line matches ``JOBBRIDGE_FAULTS_SKIP``. Called by ``boot/sitecustomize.py``."""
    global _installed
    env = os.environ if environ is None else environ
    spec = env.get("JOBBRIDGE_FAULTS", "").strip()
    if not spec or _installed is not None:
        return _installed
    directory = env.get("JOBBRIDGE_FAULTS_DIR")
    counts_file = None
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        counts_file = Path(directory) / f"{os.getpid()}.json"
    _installed = FaultInjector.from_spec(spec, env.get("JOBBRIDGE_FAULTS_SEED", "0"), counts_file=counts_file,
                                         skip=env.get("JOBBRIDGE_FAULTS_SKIP", DEFAULT_SKIP), mix_argv=True).install()
    atexit.register(_installed.flush, True)
    return _installed


def collect_counts(directory: Path) -> dict[str, Any]:
    """Add up the counts every process of a run wrote to ``directory``."""
    counts: dict[str, int] = {}
    calls: dict[str, int] = {}
    processes = 0
    for path in sorted(Path(directory).glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        processes += 1
        for key, value in data.get("counts", {}).items():
            counts[key] = counts.get(key, 0) + int(value)
        for key, value in data.get("calls", {}).items():
            calls[key] = calls.get(key, 0) + int(value)
    return {"processes": processes, "injected": counts, "calls": calls}
