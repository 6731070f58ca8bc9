"""The Celery baseline's app: one no-op task (echo: the params back), Redis as broker and result
backend, settings as they come but for the URLs (from JOBBRIDGE_BENCH_REDIS_URL)."""

import os
import time

from celery import Celery

URL = os.environ.get("JOBBRIDGE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
app = Celery("jobbridge_bench", broker=URL, backend=URL)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)


@app.task(name="echo")
def echo(params):
    """The same no-op job as jobbridge's echo; returns its params and when it started."""
    return {"params": params, "started": time.time()}
