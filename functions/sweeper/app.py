"""SweeperFunction's handler (EventBridge schedule): end lapsed leases, end queue waits past their
deadline, send what the stream missed or what waited past the re-dispatch interval. See
jobbridge.sweeper."""

from functools import lru_cache

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit

from jobbridge.config import get_settings
from jobbridge.dispatch import Dispatcher
from jobbridge.lifecycle import JobLifecycle
from jobbridge.observability import get_logger
from jobbridge.registry import load_registry
from jobbridge.store import JobStore
from jobbridge.sweeper import Sweeper

logger = get_logger()
metrics = Metrics(namespace="jobbridge")


@lru_cache(maxsize=1)
def _sweeper() -> Sweeper:
    settings = get_settings()
    store = JobStore(settings.table_name, retention_days=settings.retention_days)
    return Sweeper(JobLifecycle(store, load_registry(settings.job_modules)), Dispatcher(settings.queue_urls()))


@metrics.log_metrics(capture_cold_start_metric=True)
@logger.inject_lambda_context(clear_state=True)
def handler(event, context):
    report = _sweeper().sweep()
    for name in ("redispatched", "resent", "redispatch_failed", "queue_waits_expired", "leases_requeued",
                 "leases_failed", "leases_cancelled", "skipped", "errors"):
        metrics.add_metric(name=f"sweeper_{name}", unit=MetricUnit.Count, value=getattr(report, name))
    logger.info("swept", extra={"report": report.__dict__})
    return {k: v for k, v in report.__dict__.items() if k != "job_ids"}
