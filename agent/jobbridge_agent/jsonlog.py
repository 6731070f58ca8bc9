"""JSON log lines, one object per line, with every ``extra`` field (job_id, attempt, ...) at the
top level, so ``journalctl -o cat -u jobbridge-agent | jq 'select(.job_id == "job_...")'``
follows one job. Set up by the CLI (and by each job's child process), never by the library.

    {"ts": "2026-01-01T12:00:00.123Z", "level": "INFO", "logger": "jobbridge.runner",
     "message": "attempt settled", "job_id": "job_01...", "attempt": 1, "outcome": "succeeded"}
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO, Any

# LogRecord's own attributes: everything else on a record came from ``extra``.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def configure_logging(level: str = "INFO", stream: IO[str] | None = None) -> logging.Handler:
    """One JSON handler on the root logger; chatty libraries (botocore, urllib3) at WARNING."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    return handler
