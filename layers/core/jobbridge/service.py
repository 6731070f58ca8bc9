"""JobService: the domain operations the API offers, above the store and below HTTP.

Submitting is the hot path: validate, route and one conditional PutItem; nothing else touches
AWS. The bridge, not the API, sends the job's message (the outbox: docs/ARCHITECTURE.md).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

from .dynamo_codec import dump_json
from .errors import IdempotencyConflict, InvalidParams
from .ids import idempotent_job_id, iso, new_job_id
from .models import HistoryEntry, Job, JobCreate, State
from .registry import Registry
from .routing import choose_placement
from .store import JobStore


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False: an idempotent replay returned the job the key made before


def request_hash(request: JobCreate) -> str:
    # A field added later is left out while unset, so a replay of an older request keeps its hash.
    canonical = dump_json(request.model_dump(mode="json", exclude={"queue_wait_s"} if request.queue_wait_s is None else None))
    return hashlib.sha256(canonical.encode()).hexdigest()


class JobService:
    def __init__(self, store: JobStore, registry: Registry) -> None:
        self.store = store
        self.registry = registry

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
        placement = choose_placement(jt, request, params)
        if not _finite(params.model_dump()):
            # Checked before mode="json", which would silently turn NaN and Infinity into null.
            raise InvalidParams(jt.name, [{"loc": ["body", "params"], "msg": "Out of range float values are not JSON compliant",
                                           "type": "value_error"}])
        params_json = params.model_dump(mode="json")
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
        stored, created = self.store.create(job)
        if not created and (stored.tenant != tenant or stored.request_hash != digest):
            raise IdempotencyConflict(idempotency_key or "", stored.job_id)
        return Submitted(stored, created)


def _finite(value: object) -> bool:
    """False if a float NaN or Infinity is anywhere in ``value`` (JSON has neither)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return all(_finite(v) for v in value)
    return True
