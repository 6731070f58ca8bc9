"""DeadLetterFunction's handler: drains the three DLQs and marks each job FAILED (dead-lettered
after N receives) unless it is already final. Idempotent: a final job is left as it is."""

from functools import lru_cache

from aws_lambda_powertools import Metrics
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from jobbridge.config import get_settings
from jobbridge.dead_letters import DeadLetters
from jobbridge.observability import get_logger
from jobbridge.queues import Queue
from jobbridge.store import JobStore

logger = get_logger()
metrics = Metrics(namespace="jobbridge")
processor = BatchProcessor(event_type=EventType.SQS)


@lru_cache(maxsize=1)
def _dead_letters() -> DeadLetters:
    settings = get_settings()
    return DeadLetters(JobStore(settings.table_name, retention_days=settings.retention_days))


@lru_cache(maxsize=8)
def _queue(arn: str) -> Queue:
    return Queue.of_arn(arn)


def record_handler(record: SQSRecord):
    receives = int(record.attributes.approximate_receive_count or 0)
    try:
        outcome = _dead_letters().handle(record.body, receives, source_arn=record.event_source_arn)
    except Exception:
        # DynamoDB unavailable: back in seconds, not after the DLQ's visibility timeout.
        _queue(record.event_source_arn).return_soon(record.receipt_handle, max(1, receives))
        raise
    metrics.add_metric(name=f"dead_letter_{outcome}", unit=MetricUnit.Count, value=1)
    return outcome


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def handler(event, context):
    return process_partial_response(event=event, record_handler=record_handler, processor=processor, context=context)
