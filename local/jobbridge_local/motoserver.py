"""moto server, the AWS emulator, as a child process on loopback.

A subprocess (``python -m jobbridge_local.motoserver``: moto's own server, with DynamoDB made as
strict as AWS about item size by ``strict_dynamodb``) rather than moto's in-process
ThreadedMotoServer: the emulator's state then survives nothing but itself, and stopping it cannot
disturb the caller's threads. Readiness is moto's own dashboard route ``/moto-api/`` answering.
http://docs.getmoto.org/en/latest/docs/server_mode.html

Example::

    with MotoServer(port=free_port()) as moto:
        boto3.client("sqs", endpoint_url=moto.endpoint_url, ...)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4566


def configured_port() -> int:
    """``JOBBRIDGE_AWS_PORT`` or 4566 (docs/CONTRACTS.md, "Local stack")."""
    return int(os.environ.get("JOBBRIDGE_AWS_PORT") or DEFAULT_PORT)


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def is_answering(url: str, timeout: float = 0.5) -> bool:
    """True when an HTTP server answers at ``url`` (any status)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True  # it answered, just not with 2xx
    except (urllib.error.URLError, OSError):
        return False


class MotoServerError(RuntimeError):
    pass


class MotoServer:
    """One moto server process. ``start()`` returns once it answers; ``stop()`` is idempotent."""

    name = "moto"

    def __init__(self, host: str = DEFAULT_HOST, port: int | None = None, log_file: Path | None = None):
        self.host = host
        self.port = port if port is not None else configured_port()
        self.log_file = log_file
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        if self._process is not None:
            return
        if is_answering(self.endpoint_url + "/moto-api/"):
            raise MotoServerError(f"something already answers on {self.endpoint_url}: stop it or set JOBBRIDGE_AWS_PORT")
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_file.open("ab")
        output = self._log if self._log is not None else subprocess.DEVNULL
        self._process = subprocess.Popen(
            [sys.executable, "-m", "jobbridge_local.motoserver", "-H", self.host, "-p", str(self.port)],
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # Its own process group: a Ctrl-C in the terminal reaches the stack's CLI, which then
            # stops moto last and in order, instead of moto dying under the running API.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                code = self._process.returncode
                self._cleanup()
                raise MotoServerError(f"moto server exited with {code} before answering (see {self.log_file})")
            if is_answering(self.endpoint_url + "/moto-api/"):
                return
            time.sleep(0.1)
        self.stop()
        raise MotoServerError(f"moto server did not answer on {self.endpoint_url} within {timeout} s")

    def reset(self) -> None:
        """Forget every resource (moto's ``POST /moto-api/reset``): a clean emulator, no restart."""
        request = urllib.request.Request(self.endpoint_url + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def is_alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def stop(self, grace: float = 5.0) -> None:
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.terminate()  # moto.server handles SIGTERM with sys.exit(0)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._cleanup()

    def _cleanup(self) -> None:
        self._process = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "MotoServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    """moto's server, with DynamoDB as strict as AWS about item size (``strict_dynamodb``)."""
    from moto import server

    from .strict_dynamodb import install

    install()
    server.main(argv)


if __name__ == "__main__":
    main()
