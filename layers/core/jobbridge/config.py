"""Settings, validated once per process. Logic never reads ``os.environ``; it takes a Settings.

The variables are listed in docs/CONTRACTS.md; template.yaml sets them in AWS and the local stack
resolves the same template entries for moto server.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .models import Route

_PREFIX = "JOBBRIDGE_"


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True)

    table_name: str = "jobbridge-jobs"
    queue_url_lambda: str = ""
    queue_url_batch: str = ""
    queue_url_private: str = ""
    auth_mode: Literal["gateway", "verify"] = "gateway"
    tenant_claim: str = "tenant"
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_public_key_file: str | None = None
    # Agents authenticate apart from tenants: in AWS with IAM (SigV4) on the /agent routes; in
    # verify mode with a token for this audience, which the tenant routes refuse (and vice versa).
    agent_audience: str = "jobbridge-agent"
    # Gateway mode: the IAM role whose sessions alone may call the /agent routes
    # (arn:aws:iam::ACCOUNT:role/NAME). Unset there, every agent call is refused (fails closed).
    agent_role_arn: str | None = None
    agent_lease_max_s: int = Field(default=900, ge=10, le=43_200)
    job_modules: tuple[str, ...] = ()
    retention_days: int = Field(default=30, ge=1, le=3650)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024)
    # The deployed WorkerFunction (template parameters WorkerTimeout, WorkerMemorySize): routing
    # sends public work it cannot run to Batch.
    worker_timeout_s: int = Field(default=900, ge=1, le=900)
    worker_memory_mb: int = Field(default=10_240, ge=128, le=10_240)
    service_name: str = "jobbridge"

    @field_validator("job_modules", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for name in cls.model_fields:
            key = _PREFIX + name.upper()
            if key in env and env[key] != "":
                values[name] = env[key]
        if env.get("POWERTOOLS_SERVICE_NAME"):
            values["service_name"] = env["POWERTOOLS_SERVICE_NAME"]
        return cls.model_validate(values)

    def _configured_url(self, route: Route) -> str:
        return {
            Route.LAMBDA: self.queue_url_lambda,
            Route.BATCH: self.queue_url_batch,
            Route.PRIVATE: self.queue_url_private,
        }[route]

    def configured_queue_urls(self) -> dict[Route, str]:
        """The queues that are configured (the API's health check asks only these)."""
        return {route: url for route in Route if (url := self._configured_url(route))}

    def queue_url(self, route: Route) -> str:
        url = self._configured_url(route)
        if not url:
            raise RuntimeError(f"no queue configured for route {route.value}: set JOBBRIDGE_QUEUE_URL_{route.name}")
        return url

    def queue_urls(self) -> dict[Route, str]:
        return {route: self.queue_url(route) for route in Route}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read from the environment on first use."""
    return Settings.from_env()
