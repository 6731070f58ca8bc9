"""jobbridge-client: submit, follow and cancel jobbridge jobs from Python (``Client``, ``AsyncClient``)
or the shell (``jobbridge jobs ...``, ``jobbridge-jobs ...``)."""

__version__ = "0.1.0"

from ._core import RetryPolicy
from .aio import AsyncClient
from .client import Client
from .errors import (AuthError, Conflict, ConnectionFailed, InvalidRequest, JobBridgeError, JobCancelled, JobFailed,
                     NotFound, ProblemError, RateLimited, ServerError, WaitTimeout)
from .models import Accepted, Job, JobError, JobSummary, Page, Progress, State

__all__ = [
    "Accepted", "AsyncClient", "AuthError", "Client", "Conflict", "ConnectionFailed", "InvalidRequest", "Job",
    "JobBridgeError", "JobCancelled", "JobError", "JobFailed", "JobSummary", "NotFound", "Page", "ProblemError",
    "Progress", "RateLimited", "RetryPolicy", "ServerError", "State", "WaitTimeout",
]
