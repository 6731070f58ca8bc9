"""jobbridge core: the domain, the store and the job types shared by every runtime.

The same package is the Lambda layer, the Batch container's library and the on-prem agent's.
Importing it is cheap: submodules are imported by what needs them, ``JobSubmitter`` included
(``from jobbridge import JobSubmitter`` imports jobbridge.submitter on first use).
"""

from typing import Any

__version__ = "0.1.0"
__all__ = ["JobSubmitter"]


def __getattr__(name: str) -> Any:
    if name == "JobSubmitter":
        from .submitter import JobSubmitter

        return JobSubmitter
    raise AttributeError(f"module 'jobbridge' has no attribute {name!r}")
