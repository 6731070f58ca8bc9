"""Logging for every runtime: Powertools Logger (JSON lines) for the function, and the same
formatting copied to the core's stdlib ``jobbridge`` loggers, so a job's id and correlation id
appear on every line that touches it.
https://docs.powertools.aws.dev/lambda/python/latest/core/logger/#reusing-logger-across-your-code
"""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=None)
def get_logger(service: str = "jobbridge"):  # -> aws_lambda_powertools.Logger
    from aws_lambda_powertools import Logger
    from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers

    logger = Logger(service=service)
    copy_config_to_registered_loggers(source_logger=logger, include={"jobbridge"})
    return logger
