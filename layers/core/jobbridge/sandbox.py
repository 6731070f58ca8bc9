"""Keep the runner's AWS credentials away from job code that runs in a child process.

The runner needs its credentials (it claims and settles through DynamoDB); the job's function does
not. Where the function runs in a child process (the Batch container; the agent), the runner first
builds its clients, then:

- ``seal_credentials()`` removes every variable that names or holds credentials from its
  environment, so a child started afterwards has none to inherit, and the SDK's default chain in
  the child finds none (the container endpoint's URI is a random path it cannot guess);
- ``forbid_inspection()`` makes the runner's process non-dumpable (``prctl(PR_SET_DUMPABLE, 0)``):
  ``/proc/<pid>/environ`` still holds the environment the process started with, and with its
  memory it becomes readable by root only, not by the job's process running as the same user.
  https://man7.org/linux/man-pages/man2/prctl.2.html (PR_SET_DUMPABLE), proc_pid_environ(5)

In-thread job code (the Lambda worker) shares the runner's memory: none of this would hold there,
so it is not pretended (docs/SECURITY.md, "Job code").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from typing import MutableMapping

# botocore's credential providers: environment, container (ECS/Batch, EKS), web identity, profiles.
# https://docs.aws.amazon.com/sdkref/latest/guide/standardized-credentials.html
CREDENTIAL_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_CREDENTIAL_EXPIRATION",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "ECS_CONTAINER_METADATA_URI",
    "ECS_CONTAINER_METADATA_URI_V4",
)
_PR_SET_DUMPABLE = 4


def seal_credentials(environ: MutableMapping[str, str] | None = None) -> list[str]:
    """Remove the credential variables from ``environ`` (the process's by default); returns the
    names removed. Clients built before keep working: botocore resolved their credentials when it
    built them, and a container provider refreshes from the URI it captured then."""
    env = os.environ if environ is None else environ
    removed = [name for name in CREDENTIAL_VARIABLES if name in env]
    for name in removed:
        del env[name]
    return removed


def forbid_inspection() -> bool:
    """Make this process non-dumpable: other processes of the same user cannot read its memory or
    ``/proc/<pid>/environ``. True if done (Linux); False where prctl does not exist."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_DUMPABLE, 0) failed")
    return True
