"""JobService: the domain operations the API offers, above the store and below HTTP.

Submitting is the hot path: validate, route and one conditional PutItem; nothing else touches
AWS. The bridge, not the API, sends the job's message (the outbox: docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from .dynamo_codec import is_unicode_text
from .errors import IdempotencyConflict, InvalidParams, InvalidRequest
from .ids import idempotent_job_id, is_idempotency_key, iso, new_job_id
from .limits import check_params
from .models import HistoryEntry, Job, JobCreate, State
from .registry import JobType, Registry
from .routing import LambdaWorker, choose_placement
from .store import JobStore


MAX_PARAMS_DEPTH = 64  # objects and arrays, the params object itself included


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False: an idempotent replay returned the job the key made before
    ran_inline: bool = False  # a hot job type: the job ran in the request and is final


def request_hash(request: JobCreate) -> str:
    # ASCII-escaped, as stored hashes were made: a replay after an upgrade still matches its job. A field
    # added later is left out while unset, so a replay of an older request keeps its hash.
    unset = {"queue_wait_s"} if request.queue_wait_s is None else None
    canonical = json.dumps(request.model_dump(mode="json", exclude=unset), separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def job_request(fields: dict[str, Any], idempotency_key: object = None,
                key_loc: tuple[str, ...] = ("body", "idempotency_key")) -> tuple[JobCreate, str | None]:
    """A submit's fields checked as ``POST /jobs`` checks its body and Idempotency-Key header, for
    the callers FastAPI does not check for (JobSubmitter, an item of a bulk submit);
    InvalidRequest naming each wrong field otherwise."""
    if idempotency_key is not None and not (isinstance(idempotency_key, str) and is_idempotency_key(idempotency_key)):
        raise InvalidRequest([{"loc": list(key_loc), "type": "value_error",
                               "msg": "must be 1-255 printable ASCII characters without spaces"}])
    try:
        return JobCreate.model_validate(fields), idempotency_key
    except ValidationError as exc:
        raise InvalidRequest([{"loc": ["body", *e["loc"]], "msg": e["msg"], "type": e["type"]}
                              for e in exc.errors()]) from None


class JobService:
    def __init__(self, store: JobStore, registry: Registry, worker: LambdaWorker = LambdaWorker()) -> None:
        self.store = store
        self.registry = registry
        self.worker = worker  # the deployed Lambda worker: what it cannot run goes to Batch

    def submit(
        self,
        tenant: str,
        request: JobCreate,
        *,
        idempotency_key: str | None = None,
        correlation_id: str | None = None,
    ) -> Submitted:
        jt = self.registry.get(request.type)
        params = jt.parse_params(request.params)
        placement = choose_placement(jt, request, params, self.worker)
        dumped = params.model_dump()
        if _depth(dumped) > MAX_PARAMS_DEPTH:
            # Past it pydantic cannot serialize them (its limit is 255 in all): refused by name, not a 500.
            raise InvalidParams(jt.name, [{"loc": ["body", "params"], "type": "value_error",
                                           "msg": f"params may be nested at most {MAX_PARAMS_DEPTH} levels deep"}])
        if not _finite(dumped):
            # Checked before mode="json", which would silently turn NaN and Infinity into null.
            raise InvalidParams(jt.name, [{"loc": ["body", "params"], "msg": "Out of range float values are not JSON compliant",
                                           "type": "value_error"}])
        if not is_unicode_text(dumped):
            # JSON's \u escapes can spell half a UTF-16 surrogate pair, which is no Unicode text: it
            # would be stored, then fail to encode on every read of the job.
            raise InvalidParams(jt.name, [{"loc": ["body", "params"], "type": "value_error",
                                           "msg": "a string holds a lone surrogate (\\ud800-\\udfff): not Unicode text"}])
        params_json = params.model_dump(mode="json")
        check_params(params_json)  # TooLarge: a 413 naming params and the limit
        now = self.store.clock()
        digest = request_hash(request)
        queue_wait_s = request.queue_wait_s or jt.queue_wait_s
        job = Job(
            job_id=idempotent_job_id(tenant, idempotency_key) if idempotency_key else new_job_id(),
            tenant=tenant,
            type=jt.name,
            params=params_json,
            route=placement.route,
            state=State.QUEUED,
            priority=request.priority,
            requirements=placement.requirements,
            data_classification=placement.data_classification,
            max_attempts=jt.max_attempts,
            timeout_s=jt.timeout_s,
            queue_wait_s=queue_wait_s,
            queue_deadline=int(now.timestamp()) + queue_wait_s,
            idempotency_key=idempotency_key,
            request_hash=digest,
            correlation_id=correlation_id,
            created_at=iso(now),
            updated_at=iso(now),
            history=[HistoryEntry(at=iso(now), state=State.QUEUED, event="submitted", attempt=0, detail=placement.route.value)],
        )
        if jt.is_hot:
            job = _run_inline(job, jt, params, self.store)
        stored, created = self.store.create(job)
        if not created and (stored.tenant != tenant or stored.request_hash != digest):
            raise IdempotencyConflict(idempotency_key or "", stored.job_id)
        return Submitted(stored, created, ran_inline=jt.is_hot)


def _run_inline(job: Job, jt: JobType, params: BaseModel, store: JobStore) -> Job:
    """The job as a hot run leaves it: final, with its one attempt in the history (jobbridge.inline).
    A replay of an Idempotency-Key runs it again before the write finds the first record: a hot
    type should be cheap and free of side effects."""
    from .inline import run_hot  # only hot submits pay for the pool's import

    started = store.clock()
    outcome = run_hot(jt, params, job.job_id)
    finished = store.clock()
    state = State.SUCCEEDED if outcome.error is None else State.FAILED
    ended = HistoryEntry(at=iso(finished), state=state, event="succeeded" if outcome.error is None else "failed",
                         attempt=1, detail=outcome.error.message[:200] if outcome.error else None)
    return job.model_copy(update={
        "state": state, "attempt": 1, "result": outcome.result, "error": outcome.error,
        "started_at": iso(started), "finished_at": iso(finished), "updated_at": iso(finished),
        "history": [*job.history, HistoryEntry(at=iso(started), state=State.RUNNING, event="ran_inline", attempt=1,
                                               detail=f"budget {jt.hot_budget_ms} ms"), ended],
    })


def _depth(value: object) -> int:
    """How deeply objects and arrays nest in ``value`` (iterative: the value may be nested deeply)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, (list, tuple)) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((child, level + 1) for child in children)
    return deepest


def _finite(value: object) -> bool:
    """False if a float NaN or Infinity is anywhere in ``value`` (JSON has neither)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True
