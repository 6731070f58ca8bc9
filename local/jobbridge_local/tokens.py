"""Local JWTs: an RS256 key pair in the state dir and tokens the API (auth mode ``verify``) accepts.

In AWS, API Gateway's JWT authorizer checks tokens from a real identity provider. Locally the API
verifies them itself against ``jwt-public.pem``; this module is the "identity provider".
Issuer ``jobbridge-local``, audience ``jobbridge``, tenant claim ``tenant`` (docs/CONTRACTS.md).

Example::

    token = issue_token("acme", ttl=3600)
    # curl -H "Authorization: Bearer $token" ...
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from . import paths

ISSUER = "jobbridge-local"
AUDIENCE = "jobbridge"
TENANT_CLAIM = "tenant"
ALGORITHM = "RS256"
DEFAULT_TTL_SECONDS = 12 * 3600  # a working day of `make run`
PRIVATE_KEY_FILE = "jwt-private.pem"
PUBLIC_KEY_FILE = "jwt-public.pem"


@dataclass(frozen=True)
class KeyPair:
    private_key_file: Path
    public_key_file: Path


def ensure_keypair(state_dir: Path | None = None) -> KeyPair:
    """Create the RSA key pair once; later calls reuse it so issued tokens stay valid."""
    directory = state_dir or paths.state_dir()
    directory.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(directory / PRIVATE_KEY_FILE, directory / PUBLIC_KEY_FILE)
    if pair.private_key_file.is_file() and pair.public_key_file.is_file():
        return pair
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    # Owner-only from the first byte: the private key signs tokens for any tenant.
    fd = os.open(pair.private_key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    pair.public_key_file.write_bytes(public_pem)
    return pair


def issue_token(
    tenant: str,
    ttl: int = DEFAULT_TTL_SECONDS,
    subject: str | None = None,
    extra_claims: Mapping[str, Any] | None = None,
    state_dir: Path | None = None,
) -> str:
    """A signed RS256 JWT for ``tenant`` with iss/aud/sub/iat/exp set; ``extra_claims`` win."""
    pair = ensure_keypair(state_dir)
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": subject or f"local-user@{tenant}",
        TENANT_CLAIM: tenant,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl),
        "jti": uuid.uuid4().hex,
    }
    claims.update(extra_claims or {})
    return jwt.encode(claims, pair.private_key_file.read_bytes(), algorithm=ALGORITHM)


def verify_token(token: str, state_dir: Path | None = None) -> dict[str, Any]:
    """Decode and check a token the way the API does in verify mode (for tests and debugging)."""
    pair = ensure_keypair(state_dir)
    return jwt.decode(
        token,
        pair.public_key_file.read_bytes(),
        algorithms=[ALGORITHM],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["exp", "iat", "iss", "aud", "sub"]},
    )


# Agent credential: in AWS the on-prem agent signs its /agent/* calls with SigV4 (IAM Roles
# Anywhere) and API Gateway authorizes them. Locally it presents a token of its own audience:
# the API's /agent routes accept only that audience, the tenant routes refuse it.
AGENT_AUDIENCE = "jobbridge-agent"  # jobbridge.config.Settings.agent_audience


def issue_agent_token(agent_id: str, ttl: int = DEFAULT_TTL_SECONDS, state_dir: Path | None = None) -> str:
    """A signed RS256 JWT for the agent ``agent_id`` (audience ``jobbridge-agent``, no tenant)."""
    pair = ensure_keypair(state_dir)
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AGENT_AUDIENCE,
        "sub": f"agent:{agent_id}",
        "agent_id": agent_id,
        "iat": now,
        "nbf": now,
        "exp": now + int(ttl),
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, pair.private_key_file.read_bytes(), algorithm=ALGORITHM)
