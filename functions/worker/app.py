"""WorkerFunction's handler: the public-lambda queue's trigger.

Powertools batch processing, one record at a time, with partial batch responses: a record that
raises goes back to the queue, the others are deleted by Lambda.
https://docs.powertools.aws.dev/lambda/python/latest/utilities/batch/
"""

from functools import lru_cache, partial

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from jobbridge.config import get_settings
from jobbridge.lifecycle import JobLifecycle
from jobbridge.messages import JobMessage
from jobbridge.models import Route
from jobbridge.observability import get_logger
from jobbridge.queues import Queue
from jobbridge.registry import load_registry
from jobbridge.runner import Runner, RunnerConfig
from jobbridge.store import JobStore
from jobbridge.worker import InvocationTime, QueueWorker

logger = get_logger()
metrics = Metrics(namespace="jobbridge")
processor = BatchProcessor(event_type=EventType.SQS)


@lru_cache(maxsize=1)
def _worker() -> QueueWorker:
    settings = get_settings()
    registry = load_registry(settings.job_modules)
    # The route fence: this worker's writes are conditional on the job being a lambda job.
    store = JobStore(settings.table_name, retention_days=settings.retention_days, route=Route.LAMBDA)
    runner = Runner(JobLifecycle(store, registry), registry, RunnerConfig(owner="lambda"))
    return QueueWorker(runner, Queue(settings.queue_url(Route.LAMBDA)))


def record_handler(record: SQSRecord, lambda_context, time: InvocationTime | None = None):
    try:
        message = JobMessage.model_validate_json(record.body)  # a malformed body raises: retried, then dead-lettered
        logger.append_keys(job_id=message.job_id, correlation_id=message.correlation_id)
        time = time or InvocationTime(lambda_context.get_remaining_time_in_millis)
        result = _worker().process(message, record.receipt_handle, time.remaining_s(), time.invocation_s)
    except Exception:
        # Reported failed below (partial batch response): back in seconds, not after the visibility timeout.
        _worker().queue.return_soon(record.receipt_handle, int(record.attributes.approximate_receive_count or 1))
        raise
    metrics.add_metric(name=f"jobs_{result.outcome.value}", unit=MetricUnit.Count, value=1)
    return result.outcome.value


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event, context):
    # The time a fresh invocation has: a job never gets more, so it is never handed back for more.
    time = InvocationTime(context.get_remaining_time_in_millis)
    return process_partial_response(event=event, record_handler=partial(record_handler, time=time),
                                    processor=processor, context=context)
