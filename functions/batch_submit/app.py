"""BatchSubmitFunction's handler: the public-batch queue's trigger.

Powertools batch processing, one record at a time, with partial batch responses: a record that
raises goes back to the queue, the others are deleted by Lambda. Each record starts at most one
AWS Batch job for its attempt, however often it is delivered (jobbridge.batch.BatchSubmitter).
https://docs.powertools.aws.dev/lambda/python/latest/utilities/batch/
"""

from functools import lru_cache

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from jobbridge.batch import BatchSettings, BatchSubmitter, BatchTargets, SubmissionInProgress
from jobbridge.messages import JobMessage
from jobbridge.models import Route
from jobbridge.observability import get_logger
from jobbridge.queues import Queue
from jobbridge.registry import load_registry
from jobbridge.store import JobStore

logger = get_logger()
metrics = Metrics(namespace="jobbridge")
processor = BatchProcessor(event_type=EventType.SQS)


@lru_cache(maxsize=1)
def _wiring() -> BatchSubmitter:
    settings = BatchSettings.from_env()
    # The route fence: only batch jobs can be reserved for (and so run by) AWS Batch.
    store = JobStore(settings.table_name, retention_days=settings.retention_days, route=Route.BATCH)
    # The job types' retry policies: an attempt whose Batch job ended unclaimed is retried per its type's.
    return BatchSubmitter(store, BatchTargets.from_settings(settings), queue=Queue(settings.queue_url(Route.BATCH)),
                          registry=load_registry(settings.job_modules))


def record_handler(record: SQSRecord):
    try:
        message = JobMessage.model_validate_json(record.body)  # a malformed body raises: retried, then dead-lettered
        logger.append_keys(job_id=message.job_id, correlation_id=message.correlation_id)
        result = _wiring().submit(message, record.receipt_handle)
    except SubmissionInProgress:
        raise  # its visibility is already set to when a takeover is safe
    except Exception:
        # Reported failed below (partial batch response): back in seconds, not after the visibility timeout.
        _wiring().queue.return_soon(record.receipt_handle, int(record.attributes.approximate_receive_count or 1))
        raise
    metrics.add_metric(name=f"batch_submit_{result.outcome.value}", unit=MetricUnit.Count, value=1)
    return result.outcome.value


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event, context):
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
