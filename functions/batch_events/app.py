"""BatchEventsFunction's handler: EventBridge "Batch Job State Change" (SUCCEEDED or FAILED) for
jobbridge's job queues. Settles a job its container left unsettled, with Batch's reason
(jobbridge.batch.BatchEvents); a job the container settled itself, or a duplicate event, changes
nothing. An exception (DynamoDB unavailable) makes Lambda retry the asynchronous invocation.
https://docs.aws.amazon.com/batch/latest/userguide/batch_job_events.html
"""

from functools import lru_cache

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from jobbridge.batch import BatchEvents
from jobbridge.config import get_settings
from jobbridge.lifecycle import JobLifecycle
from jobbridge.models import Route
from jobbridge.observability import get_logger
from jobbridge.registry import load_registry
from jobbridge.store import JobStore

logger = get_logger()
metrics = Metrics(namespace="jobbridge")


@lru_cache(maxsize=1)
def _wiring() -> BatchEvents:
    settings = get_settings()
    registry = load_registry(settings.job_modules)  # the job types' retry policies (backoff)
    store = JobStore(settings.table_name, retention_days=settings.retention_days, route=Route.BATCH)  # the route fence
    return BatchEvents(JobLifecycle(store, registry))


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event, context):
    detail = event.get("detail") or {}
    logger.append_keys(batch_job_id=detail.get("jobId"), batch_job_name=detail.get("jobName"),
                       batch_status=detail.get("status"))
    result = _wiring().handle(event)
    metrics.add_metric(name=f"batch_event_{result.outcome.value}", unit=MetricUnit.Count, value=1)
    return {"outcome": result.outcome.value, "job_id": result.job_id, "detail": result.detail}
