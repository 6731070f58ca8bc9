"""Imported by Python at start-up when this directory is on PYTHONPATH (the ``site`` module's
sitecustomize hook, https://docs.python.org/3/library/site.html): installs the fault injector that
``JOBBRIDGE_FAULTS`` describes in this process, and does nothing without it. See jobbridge_faults."""

import os

if os.environ.get("JOBBRIDGE_FAULTS"):
    try:
        import jobbridge_faults
    except ImportError:  # its parent directory is not on PYTHONPATH: say so, never break the process
        import sys

        print("sitecustomize: JOBBRIDGE_FAULTS is set but jobbridge_faults is not importable", file=sys.stderr)
    else:
        jobbridge_faults.install_from_env()
