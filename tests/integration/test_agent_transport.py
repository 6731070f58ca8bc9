"""The agent's API traffic through a real CONNECT proxy on loopback, to a real HTTPS server with a
self-signed certificate (tests/tls_support.py): TLS to the API end to end whatever the proxy's
scheme, the operator's CA file honoured on that path, and Basic proxy authentication. What the
proxy records is what anyone on the proxy's network could read."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from jobbridge.errors import DependencyUnavailable, JobNotFound
from jobbridge_agent.api import AgentApi, BearerToken
from tls_support import ConnectProxy, HttpsApi, self_signed

pytestmark = pytest.mark.integration

TOKEN = "eyJhbGciOiJSUzI1NiJ9.secret-agent-token.c2lnbmF0dXJl"
JOB_ID = "job_" + "1" * 26
TLS_HANDSHAKE, TLS_APPLICATION_DATA = 0x16, 0x17


@pytest.fixture
def cert(tmp_path: Path):
    return self_signed(tmp_path / "tls")


def agent_api(api: HttpsApi, proxy_url: str | None, ca_file: Path | None) -> AgentApi:
    return AgentApi(api.url, BearerToken(TOKEN), ca_file=ca_file, proxy_url=proxy_url, max_attempts=1, timeout_s=10)


def tls_records(data: bytes) -> list[int]:
    """The content types of the TLS records ``data`` is made of; fails if it is not TLS records."""
    kinds, offset = [], 0
    while offset < len(data):
        kind, version, length = data[offset], data[offset + 1:offset + 3], int.from_bytes(data[offset + 3:offset + 5])
        assert kind in (0x14, 0x15, 0x16, 0x17) and version[0] == 3, f"not a TLS record at {offset}: {data[offset:offset + 40]!r}"
        kinds.append(kind)
        offset += 5 + length
    return kinds


def test_through_an_http_proxy_the_api_traffic_is_tls_and_the_proxy_sees_no_secret(cert) -> None:
    # given the documented set-up: an http:// proxy in front of an https API
    with HttpsApi(cert) as api, ConnectProxy() as proxy:
        client = agent_api(api, proxy.url, cert.cert_file)

        # when the agent makes a call (the claim of a job that does not exist: a 404)
        with pytest.raises(JobNotFound):
            client.claim(JOB_ID, "agent", 60, expected_attempt=0)
        client.close()

    # then the API got the request, with its token, through one tunnel to it
    assert [(r.method, r.path) for r in api.requests] == [("POST", f"/agent/jobs/{JOB_ID}/claim")]
    assert api.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert [t.target for t in proxy.tunnels] == [f"127.0.0.1:{api.port}"]
    # and everything the proxy relayed is TLS records: a handshake, then only encrypted data
    seen = proxy.tunnelled
    kinds = tls_records(seen)
    assert kinds[0] == TLS_HANDSHAKE and TLS_APPLICATION_DATA in kinds
    for secret in (b"Authorization", b"Bearer", TOKEN.encode(), b'"attempt"', b"POST ", JOB_ID.encode()):
        assert secret not in seen


def test_the_ca_file_is_what_the_api_certificate_is_checked_against_through_the_proxy(cert, tmp_path) -> None:
    # without the operator's CA file the self-signed API is not trusted, proxy or not
    with HttpsApi(cert) as api, ConnectProxy() as proxy:
        with pytest.raises(DependencyUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            agent_api(api, proxy.url, None).claim(JOB_ID, "agent", 60, expected_attempt=0)
        # and another CA's file does not vouch for it either
        other = self_signed(tmp_path / "other")
        with pytest.raises(DependencyUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            agent_api(api, proxy.url, other.cert_file).claim(JOB_ID, "agent", 60, expected_attempt=0)
    assert api.requests == []


def test_proxy_credentials_in_the_url_authenticate_the_connect(cert) -> None:
    with HttpsApi(cert) as api, ConnectProxy(credentials="build:p@ss w0rd") as proxy:
        host = proxy.url.removeprefix("http://")
        client = agent_api(api, f"http://build:p%40ss%20w0rd@{host}", cert.cert_file)

        with pytest.raises(JobNotFound):
            client.claim(JOB_ID, "agent", 60, expected_attempt=0)
        client.close()

    (tunnel,) = proxy.tunnels
    assert tunnel.headers["proxy-authorization"] == "Basic " + base64.b64encode(b"build:p@ss w0rd").decode()
    assert not proxy.refused
    assert b"Proxy-Authorization" not in tunnel.sent  # sent on the CONNECT only, never to the API
    assert len(api.requests) == 1


def test_a_proxy_that_refuses_the_credentials_is_a_dependency_error_not_a_leak(cert) -> None:
    with HttpsApi(cert) as api, ConnectProxy(credentials="build:right") as proxy:
        host = proxy.url.removeprefix("http://")
        with pytest.raises(DependencyUnavailable, match="407"):
            agent_api(api, f"http://build:wrong@{host}", cert.cert_file).claim(JOB_ID, "agent", 60, expected_attempt=0)

    assert len(proxy.refused) == 1 and not proxy.tunnels and api.requests == []
