"""Operator job modules used by the tests (loaded through JOBBRIDGE_JOB_MODULES by dotted name)."""
