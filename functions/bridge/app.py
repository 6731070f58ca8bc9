"""BridgeFunction's handler: the outbox relay on the jobs table's stream (and the stop of a
cancelled job's AWS Batch job).

Not Powertools' BatchProcessor: it handles one record at a time, and the relay sends ten
messages per SendMessageBatch call. Partial failures are reported the same way
(ReportBatchItemFailures with the failed records' sequence numbers).
"""

from functools import lru_cache

from jobbridge.batch import BatchApi
from jobbridge.config import get_settings
from jobbridge.dispatch import Dispatcher
from jobbridge.observability import get_logger
from jobbridge.outbox import relay
from jobbridge.store import JobStore

logger = get_logger()


@lru_cache(maxsize=1)
def _wiring() -> tuple[Dispatcher, JobStore, BatchApi]:
    settings = get_settings()
    return (Dispatcher(settings.queue_urls()), JobStore(settings.table_name, retention_days=settings.retention_days),
            BatchApi())


@logger.inject_lambda_context(clear_state=True)
def handler(event, context):
    dispatcher, store, batch = _wiring()
    result = relay(event.get("Records", []), dispatcher, store, batch)
    logger.info("relayed", extra={"sent": result.sent, "terminated": result.terminated, "skipped": result.skipped,
                                  "failed": len(result.failed_record_ids)})
    return result.batch_response()
