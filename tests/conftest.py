"""Fixtures shared by every test tier.

moto server runs as a child process on a free loopback port (jobbridge_local.motoserver), so
integration tests talk to it over HTTP exactly as the local stack does. Add fixtures below;
keep the ones here working for the tests that use them.
"""

from __future__ import annotations

from typing import Iterator

import pytest

from jobbridge_local.motoserver import MotoServer, free_port as _free_port


@pytest.fixture
def free_port() -> int:
    """A loopback TCP port nothing listens on."""
    return _free_port()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the whole session (state accumulates: create what you need
    idempotently, use unique keys)."""
    server = MotoServer(port=_free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_moto_server() -> Iterator[MotoServer]:
    """A moto server of this test's own (empty state), for tests that read a whole stream or
    count messages. Starting one takes about half a second."""
    server = MotoServer(port=_free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture
def aws_endpoint_env(monkeypatch: pytest.MonkeyPatch, moto_server: MotoServer) -> str:
    """Point boto3 in this process at the session's moto server, as the local stack does for
    the functions (AWS_ENDPOINT_URL, dummy credentials, us-east-1). Returns the endpoint URL."""
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    return moto_server.endpoint_url
