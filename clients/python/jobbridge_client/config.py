"""Where the command line finds the API and its token.

In order, the first that says wins:
1. flags: ``--api-url``, ``--profile``;
2. environment: ``JOBBRIDGE_API_URL``, ``JOBBRIDGE_TOKEN`` (a token), ``JOBBRIDGE_TOKEN_COMMAND``,
   ``JOBBRIDGE_PROFILE``, ``JOBBRIDGE_CONFIG`` (the file's path);
3. the profile file, ``$XDG_CONFIG_HOME/jobbridge/config.toml`` (``~/.config/jobbridge/config.toml``),
   one table per profile, ``default`` unless another is named::

       [default]
       api_url = "http://127.0.0.1:8000"
       token_command = "jobbridge local token --tenant acme"

       [prod]
       api_url = "https://jobs.example.com"
       token_command = "my-sso token --audience jobbridge"

A ``token_command`` is run (no shell) for a token when one is first needed, and again when the API
answers 401 (the token expired): the client's token provider.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping


class ConfigError(Exception):
    """The configuration is missing something, or its file is not valid TOML."""


class TokenCommandFailed(ConfigError):
    """The profile's ``token_command`` did not print a token."""


@dataclass(frozen=True)
class Profile:
    api_url: str
    token: str | None = None
    token_command: str | None = None

    def token_source(self) -> str | Callable[[], str] | None:
        if self.token:
            return self.token
        if self.token_command:
            command = self.token_command
            return lambda: run_token_command(command)
        return None


def config_path(environ: Mapping[str, str]) -> Path:
    if environ.get("JOBBRIDGE_CONFIG"):
        return Path(environ["JOBBRIDGE_CONFIG"]).expanduser()
    base = Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else Path.home() / ".config"
    return base / "jobbridge" / "config.toml"


def load_profile(*, api_url: str | None = None, profile: str | None = None,
                 environ: Mapping[str, str] | None = None) -> Profile:
    env = os.environ if environ is None else environ
    name = profile or env.get("JOBBRIDGE_PROFILE") or "default"
    path = config_path(env)
    settings: dict[str, object] = {}
    if path.is_file():
        try:
            document = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
        found = document.get(name)
        if found is None and (profile or env.get("JOBBRIDGE_PROFILE")):
            raise ConfigError(f"{path} has no profile [{name}]")
        settings = found if isinstance(found, dict) else {}
    elif profile:
        raise ConfigError(f"profile {profile!r} asked for, but there is no {path}")
    url = api_url or env.get("JOBBRIDGE_API_URL") or settings.get("api_url")
    if not url:
        raise ConfigError(f"no API URL: pass --api-url, set JOBBRIDGE_API_URL, or set api_url in {path}")
    token = env.get("JOBBRIDGE_TOKEN") or _str(settings.get("token"))
    command = env.get("JOBBRIDGE_TOKEN_COMMAND") or _str(settings.get("token_command"))
    return Profile(api_url=str(url), token=token or None, token_command=command or None)


def run_token_command(command: str, timeout_s: float = 60) -> str:
    try:
        done = subprocess.run(shlex.split(command), capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TokenCommandFailed(f"token_command {command!r} could not run: {exc}") from None
    token = done.stdout.strip()
    if done.returncode != 0 or not token:
        why = done.stderr.strip()[-500:] or f"exit status {done.returncode}, no token printed"
        raise TokenCommandFailed(f"token_command {command!r} failed: {why}")
    return token


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
