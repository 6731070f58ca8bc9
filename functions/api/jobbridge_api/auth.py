"""Who is calling. Two modes, chosen by configuration (JOBBRIDGE_AUTH_MODE):

- ``gateway``: in AWS, the HTTP API's JWT authorizer has validated the token before the Lambda
  runs; the app reads the claims API Gateway put in the event
  (requestContext.authorizer.jwt.claims,
  https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-jwt-authorizer.html).
- ``verify``: the app verifies the Bearer token itself (RS256, issuer, audience, expiry) with
  PyJWT against a configured public key: the local stack, or any deployment without a gateway.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fastapi import HTTPException, Request

from jobbridge.config import Settings
from jobbridge.ids import TENANT_RE

# A tenant id (and a local agent id): 1-128 of A-Z a-z 0-9 _ . @ : -, the whole claim (fullmatch: a
# "$" would let a trailing newline through). Anything else is refused, never cleaned up.
_TENANT_RE = TENANT_RE
# arn:PARTITION:iam::ACCOUNT:role/[PATH/]NAME, and the ARN of a session of such a role as STS and API
# Gateway report it: arn:PARTITION:sts::ACCOUNT:assumed-role/NAME/SESSION (the role's path is not
# in it). https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_identifiers.html#identifiers-arns
_ROLE_ARN_RE = re.compile(r"^arn:(aws[a-z-]*):iam::(\d{12}):role/(?:[^/]+/)*([\w+=,.@-]{1,64})$")
_SESSION_ARN_RE = re.compile(r"^arn:(aws[a-z-]*):sts::(\d{12}):assumed-role/([\w+=,.@-]{1,64})/([\w+=,.@-]{2,64})$")
_BEARER = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@dataclass(frozen=True)
class Principal:
    tenant: str
    subject: str | None
    claims: dict[str, Any]


@dataclass(frozen=True)
class AgentPrincipal:
    """An on-prem agent: may claim and report private jobs, and nothing else."""

    agent_id: str
    identity: dict[str, Any]


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers=_BEARER)


def _forbidden(detail: str) -> HTTPException:
    return HTTPException(status_code=403, detail=detail)


@lru_cache(maxsize=4)
def _public_key(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def _verified_claims(request: Request, settings: Settings, audience: str | None = None) -> dict[str, Any]:
    import jwt  # PyJWT: imported on first use, only in verify mode

    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise _unauthorized("a Bearer token is required")
    if not settings.jwt_public_key_file:
        raise _unauthorized("token verification is not configured")
    try:
        return jwt.decode(
            token.strip(),
            _public_key(settings.jwt_public_key_file),
            algorithms=["RS256"],  # fixed: a token cannot choose its algorithm (no alg=none, no HS256 confusion)
            audience=audience or settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "iss", "aud"]},
            leeway=30,
        )
    except jwt.PyJWTError as exc:
        raise _unauthorized(f"invalid token: {exc}") from None


def _gateway_claims(request: Request) -> dict[str, Any]:
    event = request.scope.get("aws.event") or {}
    claims = (((event.get("requestContext") or {}).get("authorizer") or {}).get("jwt") or {}).get("claims")
    if not isinstance(claims, dict):
        raise _unauthorized("no authorizer claims in the request")
    return claims


def authenticate(request: Request, settings: Settings) -> Principal:
    claims = _gateway_claims(request) if settings.auth_mode == "gateway" else _verified_claims(request, settings)
    if settings.auth_mode == "verify" and settings.agent_audience in _audiences(claims):
        raise _unauthorized("an agent credential cannot call the tenant routes")
    tenant = claims.get(settings.tenant_claim)
    if not isinstance(tenant, str) or not _TENANT_RE.fullmatch(tenant):
        raise _unauthorized(f"the token has no valid {settings.tenant_claim!r} claim")
    return Principal(tenant=tenant, subject=claims.get("sub"), claims=claims)


def _gateway_iam_identity(request: Request) -> dict[str, Any]:
    # The /agent routes use the HTTP API's IAM authorization: API Gateway has checked the SigV4
    # signature and the caller's execute-api:Invoke permission before the Lambda runs, and puts
    # the caller in requestContext.authorizer.iam. A JWT-authorized event has no such block.
    event = request.scope.get("aws.event") or {}
    iam = ((event.get("requestContext") or {}).get("authorizer") or {}).get("iam")
    if not isinstance(iam, dict) or not iam.get("userArn"):
        raise _unauthorized("the agent routes need IAM (SigV4) authorization")
    return iam


def is_session_of_role(user_arn: str, role_arn: str) -> bool:
    """Whether ``user_arn`` (the caller API Gateway verified) is a session of the role ``role_arn``:
    same partition, same account, same role name. An IAM user, another role, a federated user or
    the role of the same name in another account is not."""
    session, role = _SESSION_ARN_RE.match(user_arn), _ROLE_ARN_RE.match(role_arn)
    return bool(session and role and session.group(1, 2, 3) == role.group(1, 2, 3))


def authenticate_agent(request: Request, settings: Settings) -> AgentPrincipal:
    if settings.auth_mode == "gateway":
        iam = _gateway_iam_identity(request)
        # API Gateway let through ANY principal whose IAM policies allow execute-api:Invoke on the
        # route (an administrator's, a CI role's): only the agent role's sessions are agents.
        if not settings.agent_role_arn or not is_session_of_role(str(iam["userArn"]), settings.agent_role_arn):
            raise _forbidden("the agent routes accept only sessions of the agent role")
        return AgentPrincipal(agent_id=str(iam.get("userId") or iam["userArn"]), identity=iam)
    claims = _verified_claims(request, settings, audience=settings.agent_audience)
    agent_id = claims.get("agent_id") or claims.get("sub")
    if not isinstance(agent_id, str) or not _TENANT_RE.fullmatch(agent_id):
        raise _unauthorized("the agent token has no valid agent_id")
    return AgentPrincipal(agent_id=agent_id, identity=claims)


def _audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    return [aud] if isinstance(aud, str) else list(aud or [])
