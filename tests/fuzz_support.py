"""Helpers of the fuzz tier (a module of its own: test modules must not import conftest)."""

from __future__ import annotations

import os
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

ISSUER = "jobbridge-fuzz"
AUDIENCE = "jobbridge"
REGION = "us-east-1"


def fuzz_examples(default: int = 25) -> int:
    return int(os.environ.get("JOBBRIDGE_FUZZ_EXAMPLES") or default)


def make_token(key: rsa.RSAPrivateKey, tenant: str = "fuzz", audience: str = AUDIENCE, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "fuzzer", "iss": ISSUER, "aud": audience, "iat": now, "exp": now + 3600, "tenant": tenant, **claims}
    return jwt.encode(payload, key, algorithm="RS256")
