"""The agent's configuration: a TOML file, then ``JOBBRIDGE_AGENT_*`` environment variables on
top, validated once at start by one pydantic model. Nothing else reads the environment.

Every field can be set either way: ``concurrency = 8`` in the file or
``JOBBRIDGE_AGENT_CONCURRENCY=8``. Lists (``job_modules``) are comma-separated in the
environment. See agent/agent.example.toml for every setting with its default.

    config = load_config("/etc/jobbridge/agent.toml", os.environ)   # raises ConfigError
"""

from __future__ import annotations

import ipaddress
import re
import socket
import tomllib
from pathlib import Path
from typing import Any, Literal, Mapping
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator

ENV_PREFIX = "JOBBRIDGE_AGENT_"
CONFIG_ENV = "JOBBRIDGE_AGENT_CONFIG"  # the file, when --config is not given

_AGENT_ID = re.compile(r"^[A-Za-z0-9_.@:-]{1,128}$")  # what the API accepts as an agent_id
# An SQS queue URL is <endpoint>/<12-digit account>/<queue name>; the local emulator's too.
_QUEUE_PATH = re.compile(r"^/\d{12}/[A-Za-z0-9_-]{1,75}(\.fifo)?$")
_REGION_IN_HOST = re.compile(r"(?:^|\.)(?:sqs|execute-api)\.([a-z]{2}(?:-[a-z]+)+-\d)\.amazonaws\.com(?:\.cn)?$")
SQS_MAX_VISIBILITY_S = 43_200


class ConfigError(Exception):
    """The configuration cannot work: the CLI prints it on one line and exits non-zero."""


def _default_agent_id() -> str:
    name = re.sub(r"[^A-Za-z0-9_.@:-]", "-", socket.gethostname())[:128]
    return name or "agent"


class AgentConfig(BaseModel):
    """Validated once at start. Durations are seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    queue_url: str = Field(description="The private queue's URL (stack output PrivateQueueUrl)")
    api_url: str = Field(description="The API's base URL (stack output ApiUrl)")
    auth: Literal["token", "iam"] = Field(
        default="token", description="iam: SigV4 from the default AWS credential chain (IAM Roles Anywhere); token: Bearer")
    token: SecretStr | None = None
    token_file: Path | None = Field(default=None, description="Re-read when it changes (token rotation)")
    agent_id: str = Field(default_factory=_default_agent_id, description="Names this agent in logs")
    region: str | None = Field(default=None, description="Default: from the queue URL, else the AWS configuration")
    concurrency: int = Field(default=4, ge=1, le=64)
    job_modules: tuple[str, ...] = ()
    lease_s: int = Field(default=60, ge=10, le=900, description="The job's lease; the API caps it (900 s)")
    heartbeat_s: float = Field(default=15.0, gt=0, description="At most a third of lease_s")
    visibility_s: int | None = Field(default=None, ge=1, le=SQS_MAX_VISIBILITY_S,
                                     description="The message's visibility while its job runs; default lease_s")
    wait_s: int = Field(default=20, ge=0, le=20, description="SQS long poll")
    grace_s: float = Field(default=60.0, ge=0, description="On SIGTERM: how long running jobs may still finish")
    kill_grace_s: float = Field(default=10.0, ge=0, description="From asking a job to stop to killing it")
    request_timeout_s: float = Field(default=10.0, gt=0, le=120)
    api_max_attempts: int = Field(default=4, ge=1, le=10, description="Tries of one API call (backoff, full jitter)")
    settle_retries: int = Field(default=12, ge=0, le=100, description="Extra tries of a job's final report")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    start_method: Literal["forkserver", "spawn"] = Field(
        default="forkserver", description="How job processes start (spawn: slower, but works everywhere)")
    proxy_url: str | None = Field(default=None, description=(
        "Forward proxy for the API: http://[user:password@]host:port. The agent tunnels through it with "
        "CONNECT; to an https API the traffic inside is TLS end to end (the proxy sees host and port only)"))
    ca_file: Path | None = Field(default=None, description="CA bundle for the API's TLS certificate")
    allow_insecure_http: bool = Field(default=False, description="Allow http:// to a non-loopback API")

    @field_validator("job_modules", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("agent_id")
    @classmethod
    def _agent_id(cls, value: str) -> str:
        if not _AGENT_ID.match(value):
            raise ValueError("use 1-128 of A-Z a-z 0-9 _ . @ : -")
        return value

    @field_validator("queue_url")
    @classmethod
    def _queue_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or not _QUEUE_PATH.match(parts.path):
            raise ValueError("not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)")
        return value

    @field_validator("proxy_url")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") or parts.query:
            raise ValueError("use http://[user:password@]host:port (CONNECT over TCP; the API's TLS runs inside)")
        return value

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ValueError("not an http(s) base URL")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _consistent(self) -> "AgentConfig":
        if self.heartbeat_s * 3 > self.lease_s:
            # Two beats may fail (a blip, a retry) before the lease lapses under a running job.
            raise ValueError(f"heartbeat_s ({self.heartbeat_s:g}) must be at most a third of lease_s ({self.lease_s})")
        if self.visibility_s is not None and self.visibility_s < 2 * self.heartbeat_s:
            raise ValueError(f"visibility_s ({self.visibility_s}) must be at least twice heartbeat_s ({self.heartbeat_s:g})")
        if self.auth == "token" and (self.token is None) == (self.token_file is None):
            raise ValueError("auth = token needs exactly one of token or token_file")
        api = urlsplit(self.api_url)
        if api.scheme == "http" and not self.allow_insecure_http and not _is_loopback(api.hostname or ""):
            raise ValueError(f"api_url {self.api_url} is not https (set allow_insecure_http to allow it)")
        if self.auth == "iam" and api.scheme != "https":
            raise ValueError("auth = iam signs requests to API Gateway: api_url must be https")
        return self

    # --- derived values ----------------------------------------------------------------------

    @property
    def message_visibility_s(self) -> int:
        return self.visibility_s or self.lease_s

    @property
    def owner(self) -> str:
        return f"agent:{self.agent_id}"

    def resolved_region(self, fallback: str | None = None) -> str | None:
        """The configured region, else the one in the queue's or the API's host name, else ``fallback``."""
        if self.region:
            return self.region
        for url in (self.queue_url, self.api_url):
            found = _REGION_IN_HOST.search(urlsplit(url).hostname or "")
            if found:
                return found.group(1)
        return fallback


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_config(path: str | Path | None, environ: Mapping[str, str]) -> AgentConfig:
    """The file's settings (if a path is given), then ``JOBBRIDGE_AGENT_<NAME>`` variables on top."""
    values: dict[str, Any] = {}
    if path is not None:
        file = Path(path)
        try:
            with file.open("rb") as handle:
                values.update(tomllib.load(handle))
        except FileNotFoundError:
            raise ConfigError(f"config file {file} does not exist") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {file}: {exc}") from None
    for name in AgentConfig.model_fields:
        key = ENV_PREFIX + name.upper()
        if environ.get(key, "") != "":
            values[name] = environ[key]
    try:
        return AgentConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, path)) from None


def _one_line(exc: ValidationError, path: str | Path | None) -> str:
    problems = []
    for err in exc.errors(include_url=False):
        where = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "missing":
            msg = f"missing (set it in the config file or {ENV_PREFIX}{where.upper()})"
        elif err["type"] == "extra_forbidden":
            msg = "unknown setting"
        problems.append(f"{where}: {msg}" if where else msg)
    source = f" ({path})" if path else ""
    return f"invalid configuration{source}: " + "; ".join(problems)
