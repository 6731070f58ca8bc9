"""Submit jobs from your own Lambda or FastAPI app, in process: the API's hot path without the HTTP hop.

The hot/cold pattern: your endpoint answers in milliseconds and hands the slow part to jobbridge.
``JobSubmitter.submit`` is ``POST /jobs`` as a call: the same validation (``JobService``, the
registry's params models, the routing, the size limits), the same one conditional PutItem, the
same Idempotency-Key semantics. The table's stream then dispatches the job, as for any other::

    from jobbridge import JobSubmitter

    submitter = JobSubmitter.from_env(tenant="video-shop")   # once per process (JOBBRIDGE_TABLE_NAME, ...)

    @app.post("/videos/{video_id}/publish", status_code=202)
    def publish(video_id: str):
        submitted = submitter.submit("transcode", {"video_id": video_id, "resolution": "8K"},
                                     idempotency_key=f"publish-{video_id}")
        return {"job_id": submitted.job.job_id}

The app needs what the API needs: ``dynamodb:PutItem`` and ``GetItem`` on the jobs table, the
table's name, the same job types (``JOBBRIDGE_JOB_MODULES``) and the deployed worker's limits
(``JOBBRIDGE_WORKER_TIMEOUT_S``/``_MEMORY_MB``). The tenant is the app's to say: the jobs are
that tenant's, read and cancelled through the API with that tenant's token.
"""

from __future__ import annotations

from typing import Any

from .config import Settings
from .errors import JobNotFound
from .ids import is_job_id, is_tenant
from .models import DataClassification, JobPublic, Requirements, Target
from .registry import Registry, load_registry
from .routing import LambdaWorker
from .service import JobService, Submitted, job_request
from .store import JobStore

__all__ = ["JobSubmitter", "Submitted"]


class JobSubmitter:
    def __init__(self, tenant: str, settings: Settings, *, store: JobStore | None = None,
                 registry: Registry | None = None, dynamodb_client: Any = None) -> None:
        """``dynamodb_client``: a boto3 client of your own (an endpoint, a session); by default
        jobbridge's shared one (``jobbridge.aws``), made on first use."""
        if not is_tenant(tenant):
            raise ValueError(f"tenant must be 1-128 of A-Z a-z 0-9 _ . @ : -, not {tenant!r}")
        self.tenant = tenant
        self.settings = settings
        self.store = store or JobStore(settings.table_name, client=dynamodb_client,
                                       retention_days=settings.retention_days)
        self.service = JobService(self.store, registry or load_registry(settings.job_modules),
                                  LambdaWorker(settings.worker_timeout_s, settings.worker_memory_mb))

    @classmethod
    def from_env(cls, tenant: str, **kwargs: Any) -> JobSubmitter:
        """Settings from the ``JOBBRIDGE_*`` variables (docs/CONTRACTS.md), as the API reads them."""
        return cls(tenant, Settings.from_env(), **kwargs)

    def submit(self, type: str, params: dict[str, Any] | None = None, *, target: Target | str = Target.AUTO,
               priority: int = 0, requirements: Requirements | dict[str, Any] | None = None,
               data_classification: DataClassification | str | None = None,
               idempotency_key: str | None = None, correlation_id: str | None = None) -> Submitted:
        """Record the job (one conditional PutItem) and return it: ``.job`` (QUEUED, its ``route``)
        and ``.created`` (False: the key had made this job before; no second one was made).

        Raises what the API answers 4xx for: ``InvalidRequest`` (a field of the request),
        ``UnknownJobType``, ``InvalidParams``, ``PlacementNotAllowed``, ``TooLarge``,
        ``IdempotencyConflict`` (the key was used with another request); ``DependencyUnavailable``
        when DynamoDB is (retry it: with an idempotency key, a retry never makes a second job).
        """
        fields = {"type": type, "params": params or {}, "target": target, "priority": priority,
                  "requirements": requirements or {}, "data_classification": data_classification}
        request, key = job_request(fields, idempotency_key, key_loc=("header", "Idempotency-Key"))
        return self.service.submit(self.tenant, request, idempotency_key=key,
                                   correlation_id=correlation_id)

    def get(self, job_id: str) -> JobPublic:
        """The job as its tenant sees it through the API (``JobNotFound`` for another tenant's)."""
        if not is_job_id(job_id):
            raise JobNotFound(job_id)
        return JobPublic.of(self.store.get(job_id, self.tenant))
