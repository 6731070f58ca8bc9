"""One problem body (RFC 9457) for every 4xx and 5xx, and the one place errors become HTTP.

Domain errors are mapped by class, never by message text. A 500 names no internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from jobbridge import errors

log = logging.getLogger("jobbridge.api")

PROBLEM_BASE = "https://jobbridge.dev/problems/"
MEDIA_TYPE = "application/problem+json"


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str
    errors: list[FieldError] = []
    correlation_id: str | None = None


def problem(status: int, slug: str, title: str, detail: str, *, errors_: list[dict[str, Any]] | None = None,
            request: Request | None = None, headers: dict[str, str] | None = None) -> JSONResponse:
    body = Problem(
        type=PROBLEM_BASE + slug,
        title=title,
        status=status,
        detail=detail,
        errors=[FieldError(**e) for e in (errors_ or [])],
        correlation_id=getattr(request.state, "correlation_id", None) if request is not None else None,
    )
    return JSONResponse(body.model_dump(), status_code=status, media_type=MEDIA_TYPE, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict[str, Any]]:
    out = []
    for err in exc.errors():
        out.append({"loc": [p if isinstance(p, (str, int)) else str(p) for p in err.get("loc", ())],
                    "msg": str(err.get("msg", "invalid")), "type": str(err.get("type", "value_error"))})
    return out


async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
    fields = _field_errors(exc)
    if any(e["type"] == "json_invalid" for e in fields):
        return problem(400, "malformed-json", "Malformed JSON", "the request body is not valid JSON",
                       errors_=[{**e, "loc": e["loc"][:1]} for e in fields if e["type"] == "json_invalid"], request=request)
    detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in fields[:5])
    return problem(422, "validation", "Invalid request", detail, errors_=fields, request=request)


async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    slug = {400: "bad-request", 401: "unauthorized", 403: "forbidden", 404: "not-found", 405: "method-not-allowed",
            413: "payload-too-large", 415: "unsupported-media-type"}.get(exc.status_code, "http-error")
    title = slug.replace("-", " ").capitalize()
    return problem(exc.status_code, slug, title, str(exc.detail), request=request, headers=getattr(exc, "headers", None))


def domain_problem(exc: errors.JobBridgeError, correlation_id: str | None = None) -> Problem:
    """The problem body of a domain error (its class's entry in ``_DOMAIN``, found along its MRO):
    what its handler answers, and what a bulk submit reports for one item."""
    status, slug, title, field = next(_DOMAIN[cls] for cls in type(exc).__mro__ if cls in _DOMAIN)
    fields: list[dict[str, Any]] = []
    if isinstance(exc, (errors.InvalidParams, errors.InvalidRequest)):
        fields = exc.errors
    elif isinstance(exc, errors.PlacementNotAllowed):
        fields = [{"loc": ["body", exc.field], "msg": exc.reason, "type": "placement_not_allowed"}]
    elif isinstance(exc, errors.TooLarge):
        loc = ["body"] if isinstance(exc, errors.ItemTooLarge) else ["body", exc.field]
        fields = [{"loc": loc, "msg": str(exc), "type": slug}]
    elif field is not None:
        fields = [{"loc": ["body", field] if field != "cursor" else ["query", field], "msg": str(exc), "type": slug}]
    return Problem(type=PROBLEM_BASE + slug, title=title, status=status, detail=str(exc),
                   errors=[FieldError(**f) for f in fields], correlation_id=correlation_id)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.JobBridgeError)
    body = domain_problem(exc, getattr(request.state, "correlation_id", None))
    headers = {"Retry-After": "1"} if body.status == 503 else None
    return JSONResponse(body.model_dump(), status_code=body.status, media_type=MEDIA_TYPE, headers=headers)


async def _too_deep(request: Request, exc: RecursionError) -> JSONResponse:
    return problem(400, "malformed-json", "Malformed JSON", "the request body is nested too deeply", request=request)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", extra={"path": request.url.path})
    return problem(500, "internal", "Internal error", "the server failed to handle the request; it was logged",
                   request=request)


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RecursionError, _too_deep)
    for cls in _DOMAIN:
        app.add_exception_handler(cls, _domain)
    app.add_exception_handler(Exception, _unexpected)


# Domain error -> (status, slug, title, field named in errors): the one table of the mapping.
_DOMAIN: dict[type[errors.JobBridgeError], tuple[int, str, str, str | None]] = {
    errors.JobNotFound: (404, "not-found", "Job not found", None),
    errors.UnknownJobType: (422, "unknown-job-type", "Unknown job type", "type"),
    errors.InvalidParams: (422, "invalid-params", "Invalid params", None),
    # Raised by JobSubmitter (in process) and for one item of a bulk submit.
    errors.InvalidRequest: (422, "validation", "Invalid request", None),
    errors.PlacementNotAllowed: (422, "placement-not-allowed", "Placement not allowed", None),
    # A part of the record over its share of DynamoDB's item size (jobbridge.limits): the content is
    # too large, whatever the body's size.
    errors.TooLarge: (413, "too-large", "Too large", None),
    errors.IdempotencyConflict: (409, "idempotency-conflict", "Idempotency-Key reused", None),
    errors.JobAlreadyFinal: (409, "job-final", "Job already final", None),
    errors.InvalidTransition: (409, "invalid-transition", "Conflict", None),
    errors.InvalidCursor: (400, "invalid-cursor", "Invalid cursor", "cursor"),
    errors.DependencyUnavailable: (503, "unavailable", "Service unavailable", None),
}


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": desc, "content": {MEDIA_TYPE: {}}}
    for code, desc in {
        400: "Malformed request", 401: "Missing or invalid token", 404: "Not found",
        413: "Body too large", 422: "Invalid request", 503: "A dependency is unavailable",
    }.items()
}
