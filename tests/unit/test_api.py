"""The FastAPI app in verify mode (the Bearer token checked in-app with an RSA key made here),
against template.yaml's table and queues in moto's in-process mock. No network."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from jobbridge.config import Settings
from jobbridge.errors import JobBridgeError
from jobbridge.limits import PARAMS_MAX_BYTES
from jobbridge.models import JobError, Route
from jobbridge.store import JobStore
from jobbridge_api import deps
from jobbridge_api.main import create_app

ISSUER = "jobbridge-test"
AUDIENCE = "jobbridge"
BUILTIN = ["echo", "fail", "genome_align", "sleep", "transcode"]
PROBLEM_FIELDS = {"type", "title", "status", "detail", "errors"}


# --- keys, tokens, the app ----------------------------------------------------------------------


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def signing_key() -> rsa.RSAPrivateKey:
    return new_key()


@pytest.fixture(scope="module")
def public_key_file(tmp_path_factory: pytest.TempPathFactory, signing_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path_factory.mktemp("jwt") / "public.pem"
    path.write_bytes(signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


@pytest.fixture
def make_token(signing_key: rsa.RSAPrivateKey) -> Callable[..., str]:
    def make(tenant: str | None = "acme", *, key: Any = None, algorithm: str = "RS256", drop: tuple[str, ...] = (),
             **claims: Any) -> str:
        now = int(time.time())
        payload: dict[str, Any] = {"sub": "user-1", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}
        if tenant is not None:
            payload["tenant"] = tenant
        payload.update(claims)
        for name in drop:
            payload.pop(name)
        return jwt.encode(payload, signing_key if key is None else key, algorithm=algorithm)

    return make


@pytest.fixture
def auth(make_token) -> Callable[..., dict[str, str]]:
    """``auth("globex")``: the headers of a caller of that tenant."""
    return lambda tenant="acme", **claims: {"Authorization": f"Bearer {make_token(tenant, **claims)}"}


@pytest.fixture
def settings(aws_resources, public_key_file: Path) -> Settings:
    return Settings(
        table_name=aws_resources.table_name,
        queue_url_lambda=aws_resources.queue_urls[Route.LAMBDA],
        queue_url_batch=aws_resources.queue_urls[Route.BATCH],
        queue_url_private=aws_resources.queue_urls[Route.PRIVATE],
        auth_mode="verify",
        jwt_issuer=ISSUER,
        jwt_audience=AUDIENCE,
        jwt_public_key_file=str(public_key_file),
    )


def clear_api_caches() -> None:
    for cached in (deps._registry, deps._store, deps._dispatcher):
        cached.cache_clear()


@pytest.fixture
def app(settings: Settings, watched_aws_clients) -> Iterator[Any]:
    clear_api_caches()
    application = create_app(settings)
    application.dependency_overrides[deps.settings_dep] = lambda: settings
    yield application
    clear_api_caches()


@pytest.fixture
def client(app) -> TestClient:
    # raise_server_exceptions=False: a 500 is answered as the caller would see it
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def items(ddb, settings: Settings) -> Callable[[], list[dict[str, Any]]]:
    """Every item in the jobs table (to prove a refused request wrote nothing)."""
    return lambda: ddb.scan(TableName=settings.table_name, ConsistentRead=True)["Items"]


@pytest.fixture
def store(settings: Settings, ddb) -> JobStore:
    """A store beside the app's, to put jobs in states the API cannot (RUNNING)."""
    return JobStore(settings.table_name, client=ddb)


def assert_problem(response, status: int, slug: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert PROBLEM_FIELDS <= set(body)
    assert body["status"] == status
    assert isinstance(body["errors"], list)
    if slug is not None:
        assert body["type"].endswith("/" + slug)
    assert "Traceback" not in response.text and 'File "' not in response.text
    return body


def submit(client: TestClient, headers: dict[str, str], **body: Any):
    return client.post("/jobs", json=body, headers=headers)


# --- submit: routing of every example type ----------------------------------------------------------

SUBMISSIONS = [
    ("echo", {"message": "hi"}, "auto", "lambda"),
    ("echo", {}, "public", "lambda"),
    ("echo", {}, "private", "private"),
    ("sleep", {"seconds": 1}, "auto", "lambda"),
    ("sleep", {"seconds": 1}, "public", "lambda"),
    ("sleep", {"seconds": 1200}, "auto", "batch"),
    ("sleep", {"seconds": 1200}, "public", "batch"),
    ("sleep", {"seconds": 1}, "private", "private"),
    ("fail", {}, "auto", "lambda"),
    ("fail", {"retryable": False}, "public", "lambda"),
    ("fail", {}, "private", "private"),
    ("transcode", {"video_id": "v1", "resolution": "8K"}, "auto", "batch"),
    ("transcode", {"video_id": "v1", "hdr": True}, "auto", "batch"),
    ("transcode", {"video_id": "v1", "resolution": "4K"}, "auto", "private"),
    ("transcode", {"video_id": "v1", "resolution": "4K"}, "public", "batch"),
    ("transcode", {"video_id": "v1", "resolution": "8K"}, "private", "private"),
    ("genome_align", {"sample_id": "S-1"}, "auto", "private"),
    ("genome_align", {"sample_id": "S-1"}, "private", "private"),
]


@pytest.mark.parametrize("job_type, params, target, route", SUBMISSIONS,
                         ids=[f"{t}-{tg}-{r}-{i}" for i, (t, _, tg, r) in enumerate(SUBMISSIONS)])
def test_submit_routes_each_example_type_to_each_allowed_target(client, auth, job_type, params, target, route) -> None:
    # when a job is submitted
    response = submit(client, auth(), type=job_type, params=params, target=target)

    # then it is accepted, queued and routed, and the Location names it
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["route"] == route
    assert body["state"] == "QUEUED"
    assert response.headers["location"] == body["location"] == f"/jobs/{body['job_id']}"
    assert "idempotent-replayed" not in response.headers

    shown = client.get(body["location"], headers=auth()).json()
    assert (shown["type"], shown["route"], shown["state"], shown["attempt"]) == (job_type, route, "QUEUED", 0)
    assert shown["history"][0]["event"] == "submitted"


@pytest.mark.parametrize("body, route", [
    ({"type": "sleep", "params": {"seconds": 600}, "target": "public"}, "batch"),  # past WorkerTimeout 300
    ({"type": "sleep", "params": {"seconds": 60}, "target": "public"}, "lambda"),
    ({"type": "echo", "requirements": {"memory_mb": 2048}, "target": "public"}, "batch"),  # past WorkerMemorySize
])
def test_routing_knows_the_deployed_worker(settings, watched_aws_clients, auth, body, route) -> None:
    deployed = settings.model_copy(update={"worker_timeout_s": 300, "worker_memory_mb": 1024})
    clear_api_caches()
    with TestClient(create_app(deployed)) as client:
        client.app.dependency_overrides[deps.settings_dep] = lambda: deployed
        response = client.post("/jobs", json=body, headers=auth())
    assert response.status_code == 202, response.text
    assert response.json()["route"] == route


def test_submit_makes_exactly_one_aws_call_and_never_touches_sqs(client, auth, watched_aws_clients) -> None:
    watched_aws_clients.clear()
    response = submit(client, auth(), type="echo", params={"n": 1})
    assert response.status_code == 202
    assert watched_aws_clients.operations() == ["PutItem"]
    assert watched_aws_clients.operations("sqs") == []


def test_submit_records_the_job_for_the_caller_tenant(client, auth, items) -> None:
    job_id = submit(client, auth("globex"), type="echo", params={"n": 1}).json()["job_id"]
    (item,) = items()
    assert item["job_id"] == {"S": job_id}
    assert item["tenant"] == {"S": "globex"}
    assert json.loads(item["params"]["S"]) == {"n": 1}


def test_the_correlation_id_is_echoed_and_stored(client, auth) -> None:
    response = client.post("/jobs", json={"type": "echo"}, headers={**auth(), "X-Correlation-Id": "corr-42"})
    assert response.headers["x-correlation-id"] == "corr-42"
    job = client.get(response.json()["location"], headers=auth()).json()
    assert job["correlation_id"] == "corr-42"


def test_an_unusable_correlation_id_is_replaced(client, auth) -> None:
    response = client.post("/jobs", json={"type": "echo"}, headers={**auth(), "X-Correlation-Id": "has spaces in it"})
    assert response.status_code == 202
    assert response.headers["x-correlation-id"] not in ("", "has spaces in it")


# --- submit: refusals -----------------------------------------------------------------------------------


def test_an_unknown_type_is_422_naming_the_known_ones(client, auth, items) -> None:
    body = assert_problem(submit(client, auth(), type="resize"), 422, "unknown-job-type")
    known = body["detail"].split("known types: ", 1)[1].split(", ")
    assert set(BUILTIN) <= set(known)  # other modules' types may be registered too
    assert body["errors"][0]["loc"] == ["body", "type"]
    assert items() == []


def test_target_hybrid_is_422(client, auth, items) -> None:
    body = assert_problem(submit(client, auth(), type="echo", target="hybrid"), 422, "validation")
    assert body["errors"][0]["loc"] == ["body", "target"]
    assert items() == []


@pytest.mark.parametrize(
    "job_type, params, loc",
    [
        ("transcode", {}, ["body", "params", "video_id"]),
        ("transcode", {"video_id": "v", "resolution": "16K"}, ["body", "params", "resolution"]),
        ("sleep", {"seconds": -1}, ["body", "params", "seconds"]),
        ("sleep", {"bogus": 1}, ["body", "params", "bogus"]),
        ("genome_align", {"sample_id": "../etc"}, ["body", "params", "sample_id"]),
    ],
)
def test_invalid_params_are_422_with_the_field_path(client, auth, items, job_type, params, loc) -> None:
    body = assert_problem(submit(client, auth(), type=job_type, params=params), 422, "invalid-params")
    assert [e["loc"] for e in body["errors"]] == [loc]
    assert items() == []


@pytest.mark.parametrize(
    "request_body, field",
    [
        ({"type": "genome_align", "params": {"sample_id": "S"}, "target": "public"}, "target"),
        ({"type": "echo", "data_classification": "restricted", "target": "public"}, "target"),
        ({"type": "transcode", "params": {"video_id": "v"}, "target": "public", "data_classification": "confidential"}, "target"),
    ],
)
def test_a_forbidden_placement_is_422_saying_why(client, auth, items, request_body, field) -> None:
    body = assert_problem(client.post("/jobs", json=request_body, headers=auth()), 422, "placement-not-allowed")
    assert body["errors"][0]["loc"] == ["body", field]
    assert "private" in body["detail"]
    assert items() == []


@pytest.mark.parametrize("wait, bound", [(59, "60"), (7 * 86400 + 1, "604800")])
def test_a_queue_wait_outside_its_bounds_is_422_naming_the_bound(client, auth, items, wait, bound) -> None:
    body = assert_problem(submit(client, auth(), type="echo", queue_wait_s=wait), 422, "validation")
    assert body["errors"][0]["loc"] == ["body", "queue_wait_s"]
    assert bound in body["errors"][0]["msg"]
    assert items() == []


@pytest.mark.parametrize("field, value", [("state", "SUCCEEDED"), ("tenant", "globex"), ("attempt", 3),
                                          ("lease_owner", "me"), ("created_at", "2020-01-01T00:00:00.000Z"),
                                          ("queue_deadline", 1), ("releases", 1), ("claim_token", "t" * 32)])
def test_a_server_owned_field_in_the_body_is_422_naming_it(client, auth, items, field, value) -> None:
    body = assert_problem(client.post("/jobs", json={"type": "echo", field: value}, headers=auth()), 422)
    assert body["errors"][0]["loc"] == ["body", field]
    assert items() == []


NOT_JSON_NUMBERS = [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999", b"1E400", b"nan", b"inf",
                    b"9" * 5000]


@pytest.mark.parametrize("number", NOT_JSON_NUMBERS, ids=[n.decode()[:12] for n in NOT_JSON_NUMBERS])
@pytest.mark.parametrize("where", ["params", "nested-params", "typed-params", "priority", "requirements"])
def test_nan_infinity_and_huge_numbers_are_refused_wherever_they_are(client, auth, items, number: bytes,
                                                                     where: str) -> None:
    body = {
        "params": b'{"type": "echo", "params": {"x": %s}}',
        "nested-params": b'{"type": "echo", "params": {"a": [{"b": [1, %s]}]}}',
        "typed-params": b'{"type": "sleep", "params": {"seconds": %s}}',
        "priority": b'{"type": "echo", "priority": %s}',
        "requirements": b'{"type": "echo", "requirements": {"memory_mb": %s}}',
    }[where] % number
    response = client.post("/jobs", content=body, headers={**auth(), "Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert_problem(response, response.status_code)
    assert items() == []


@pytest.mark.parametrize("text", [r"\ud800", r"\udfff", r"x\udbff", r"\udc00\ud800"])
@pytest.mark.parametrize("where", ["value", "key", "list"])
def test_a_lone_surrogate_in_params_is_422_and_stores_nothing(client, auth, items, text: str, where: str) -> None:
    # JSON's \u escapes can spell half of a UTF-16 pair, which is no Unicode text: stored, the job
    # could never be shown again (every GET of it failed to encode its params: a 500).
    params = {"value": '{"s": "%s"}', "key": '{"%s": 1}', "list": '{"a": ["ok", "%s"]}'}[where] % text
    response = client.post("/jobs", content=('{"type": "echo", "params": %s}' % params).encode(),
                           headers={**auth(), "Content-Type": "application/json"})
    body = assert_problem(response, 422)
    assert any(word in json.dumps(body["errors"]).lower() for word in ("surrogate", "unicode"))
    assert items() == []


def test_non_ascii_params_round_trip(client, auth) -> None:
    params = {"ключ": "значение", "emoji": "\U0001F600", "rtl": "\u202eabc", "nul": "a\u0000b", "cjk": "漢字" * 100}
    job_id = submit(client, auth(), type="echo", params=params).json()["job_id"]
    assert client.get(f"/jobs/{job_id}", headers=auth()).json()["params"] == params


def test_a_body_over_256_kib_is_413(client, auth, items) -> None:
    response = submit(client, auth(), type="echo", params={"blob": "x" * (256 * 1024)})
    body = assert_problem(response, 413, "payload-too-large")
    assert "262144" in body["detail"]
    assert items() == []


def test_a_chunked_body_over_256_kib_is_413(client, auth, items) -> None:
    chunks = [b'{"type": "echo", "params": {"blob": "'] + [b"x" * 65536] * 5 + [b'"}}']
    response = client.post("/jobs", content=iter(chunks), headers={**auth(), "Content-Type": "application/json"})
    assert_problem(response, 413)
    assert items() == []


def test_params_just_under_their_share_of_the_record_are_accepted(client, auth) -> None:
    response = submit(client, auth(), type="echo", params={"blob": "x" * (PARAMS_MAX_BYTES - 20)})
    assert response.status_code == 202


def test_a_body_under_the_body_limit_with_params_over_their_share_is_413_naming_params(client, auth, items) -> None:
    response = submit(client, auth(), type="echo", params={"blob": "x" * (250 * 1024)})

    body = assert_problem(response, 413, "too-large")
    assert body["errors"][0]["loc"] == ["body", "params"]
    assert str(PARAMS_MAX_BYTES) in body["detail"]
    assert items() == []


EMOJI = "\U0001F680"  # 4 bytes in UTF-8; 12 as a JSON escape


def test_emoji_params_are_stored_as_utf8_and_accepted_up_to_their_share(client, auth, items) -> None:
    # 34,000 emoji: 136,000 bytes as UTF-8, 408,000 as the escapes stored before (DynamoDB refused it: a 500)
    response = submit(client, auth(), type="echo", params={"blob": EMOJI * 34_000})

    assert response.status_code == 202, response.text
    (item,) = items()
    assert len(item["params"]["S"].encode()) == 34_000 * 4 + len('{"blob":""}')
    assert client.get(response.headers["Location"], headers=auth()).json()["params"]["blob"] == EMOJI * 34_000


def test_emoji_params_over_their_share_are_413_never_500(client, auth, items) -> None:
    response = submit(client, auth(), type="echo", params={"blob": EMOJI * 50_000})  # 200,000 bytes

    body = assert_problem(response, 413, "too-large")
    assert body["errors"] == [{"loc": ["body", "params"], "msg": body["detail"], "type": "too-large"}]
    assert "200011" in body["detail"] and str(PARAMS_MAX_BYTES) in body["detail"]
    assert items() == []


def test_a_lone_surrogate_in_params_is_422_naming_params(client, auth, items) -> None:
    # valid JSON text, but no Unicode character: neither DynamoDB (UTF-8) nor a JSON answer can hold it
    response = client.post("/jobs", content=b'{"type": "echo", "params": {"s": "\\ud800"}}',
                           headers={**auth(), "Content-Type": "application/json"})
    body = assert_problem(response, 422, "invalid-params")
    assert body["errors"][0]["loc"] == ["body", "params"]
    assert items() == []


@pytest.mark.parametrize("char", ["ü", "漢", "\U0001F600"])
def test_a_body_of_multibyte_text_just_under_the_limit_is_stored_and_readable(client, auth, char: str) -> None:
    # params of UTF-8 text up to their share must fit DynamoDB's 400 KB item: stored \\u-escaped they
    # grew up to 3x (a 500)
    text = char * ((PARAMS_MAX_BYTES - 100) // len(char.encode()))
    response = submit(client, auth(), type="echo", params={"blob": text})
    assert response.status_code == 202, response.text[:300]
    job = client.get(response.json()["location"], headers=auth())
    assert job.status_code == 200 and job.json()["params"] == {"blob": text}


@pytest.mark.parametrize("depth", [65, 255, 300, 900])
@pytest.mark.parametrize("opener, closer", [("[", "]"), ('{"a": ', "}")], ids=["lists", "objects"])
def test_params_nested_past_the_limit_are_422_naming_the_limit(client, auth, items, depth, opener, closer) -> None:
    # Between the JSON parser's recursion limit and pydantic's serialization depth (255) such params
    # were accepted and then failed to serialize: a 500.
    content = ('{"type": "echo", "params": {"a": ' + opener * depth + "1" + closer * depth + "}}").encode()
    response = client.post("/jobs", content=content, headers={**auth(), "Content-Type": "application/json"})
    body = assert_problem(response, 422)
    assert "64 levels" in json.dumps(body["errors"])
    assert items() == []


def test_params_nested_to_the_limit_are_accepted(client, auth) -> None:
    params = {"a": 1}
    for _ in range(63):
        params = {"a": params}
    response = submit(client, auth(), type="echo", params=params)
    assert response.status_code == 202, response.text[:300]


def test_malformed_json_is_400(client, auth, items) -> None:
    response = client.post("/jobs", content=b'{"type": "echo",', headers={**auth(), "Content-Type": "application/json"})
    assert_problem(response, 400, "malformed-json")
    assert items() == []


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 100_000,
        b"[" * 100_000 + b"]" * 100_000,
        b'{"type": "echo", "params": {"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}}",
    ],
    ids=["unclosed", "closed", "inside-params"],
)
def test_deeply_nested_json_is_a_4xx_problem(client, auth, items, content: bytes) -> None:
    response = client.post("/jobs", content=content, headers={**auth(), "Content-Type": "application/json"})
    assert 400 <= response.status_code < 500
    assert_problem(response, response.status_code)
    assert items() == []


def test_an_unexpected_error_is_a_500_problem_that_names_no_internals(app, client, auth) -> None:
    class Exploding:
        def submit(self, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("secret detail at /var/task/jobbridge/store.py line 42")

    app.dependency_overrides[deps.service_dep] = lambda: Exploding()
    response = submit(client, auth(), type="echo")
    body = assert_problem(response, 500, "internal")
    assert "secret" not in response.text and "store.py" not in response.text
    assert body["errors"] == []


def test_an_unavailable_table_is_a_503_problem(app, client, auth) -> None:
    app.dependency_overrides[deps.store_dep] = lambda: JobStore("no-such-table")
    response = client.get("/jobs", headers=auth())
    assert_problem(response, 503, "unavailable")
    assert response.headers["retry-after"]


# --- authentication ---------------------------------------------------------------------------------------


def hs256_with_public_key(public_key_file: Path, claims: dict[str, Any]) -> str:
    """The algorithm-confusion forgery: HS256 keyed with the server's *public* key."""
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).decode().rstrip("=")

    signing_input = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(claims).encode())
    signature = hmac.new(public_key_file.read_bytes(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + b64(signature)


def valid_claims() -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "user-1", "tenant": "acme", "iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 300}


def tampered(token: str, **changes: Any) -> str:
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    new_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"{header}.{new_payload}.{signature}"


BAD_CREDENTIALS: dict[str, Callable[[Callable[..., str], Path], dict[str, str]]] = {
    "missing": lambda mk, pub: {},
    "empty-bearer": lambda mk, pub: {"Authorization": "Bearer "},
    "basic-scheme": lambda mk, pub: {"Authorization": "Basic YWNtZTpwYXNz"},
    "not-a-jwt": lambda mk, pub: {"Authorization": "Bearer not.a.jwt"},
    "expired": lambda mk, pub: {"Authorization": "Bearer " + mk(exp=int(time.time()) - 3600, iat=int(time.time()) - 7200)},
    "wrong-audience": lambda mk, pub: {"Authorization": "Bearer " + mk(aud="someone-else")},
    "agent-audience": lambda mk, pub: {"Authorization": "Bearer " + mk(aud=[AUDIENCE, "jobbridge-agent"])},
    "wrong-issuer": lambda mk, pub: {"Authorization": "Bearer " + mk(iss="https://evil.example.com/")},
    "no-exp": lambda mk, pub: {"Authorization": "Bearer " + mk(drop=("exp",))},
    "forged-signature": lambda mk, pub: {"Authorization": "Bearer " + mk(key=new_key())},
    "tampered-tenant": lambda mk, pub: {"Authorization": "Bearer " + tampered(mk(), tenant="globex")},
    "alg-none": lambda mk, pub: {"Authorization": "Bearer " + jwt.encode(valid_claims(), None, algorithm="none")},
    "hs256-public-key": lambda mk, pub: {"Authorization": "Bearer " + hs256_with_public_key(pub, valid_claims())},
    "no-tenant": lambda mk, pub: {"Authorization": "Bearer " + mk(None)},
    "bad-tenant": lambda mk, pub: {"Authorization": "Bearer " + mk("../globex")},
    "tenant-not-a-string": lambda mk, pub: {"Authorization": "Bearer " + mk(["acme"])},
    "tenant-empty": lambda mk, pub: {"Authorization": "Bearer " + mk("")},
    "tenant-trailing-newline": lambda mk, pub: {"Authorization": "Bearer " + mk("acme\n")},
    "tenant-space": lambda mk, pub: {"Authorization": "Bearer " + mk("acme corp")},
    "tenant-non-ascii": lambda mk, pub: {"Authorization": "Bearer " + mk("acmé")},
    "tenant-too-long": lambda mk, pub: {"Authorization": "Bearer " + mk("a" * 129)},
    "tenant-a-number": lambda mk, pub: {"Authorization": "Bearer " + mk(42)},
}


@pytest.mark.parametrize("credential", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
def test_a_bad_credential_is_401_and_creates_nothing(client, make_token, public_key_file, items, watched_aws_clients,
                                                     credential) -> None:
    watched_aws_clients.clear()
    response = client.post("/jobs", json={"type": "echo"}, headers=credential(make_token, public_key_file))
    assert_problem(response, 401, "unauthorized")
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert watched_aws_clients.operations() == []
    assert items() == []


@pytest.mark.parametrize("method, path", [("GET", "/jobs"), ("GET", "/jobs/job_0000000000000000000000000z"),
                                          ("POST", "/jobs/job_0000000000000000000000000z/cancel"),
                                          ("GET", "/job-types"), ("GET", "/health")])
def test_every_tenant_route_needs_a_token(client, method, path) -> None:
    assert_problem(client.request(method, path), 401)


def test_a_token_within_clock_skew_is_accepted(client, auth) -> None:
    now = int(time.time())
    assert client.get("/jobs", headers=auth(iat=now + 10, exp=now + 300)).status_code == 200


# --- idempotency -------------------------------------------------------------------------------------------


def test_the_same_key_and_body_returns_the_same_job(client, auth, items, watched_aws_clients) -> None:
    headers = {**auth(), "Idempotency-Key": "order-4711"}
    first = client.post("/jobs", json={"type": "echo", "params": {"n": 1}}, headers=headers)
    watched_aws_clients.clear()

    again = client.post("/jobs", json={"params": {"n": 1}, "type": "echo"}, headers=headers)

    assert first.status_code == again.status_code == 202
    assert again.json()["job_id"] == first.json()["job_id"]
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert again.headers["location"] == first.headers["location"]
    assert watched_aws_clients.operations() == ["PutItem"]  # the replay is found by the same write
    assert len(items()) == 1


def test_the_same_key_with_another_body_is_409(client, auth, items) -> None:
    headers = {**auth(), "Idempotency-Key": "order-4711"}
    first = client.post("/jobs", json={"type": "echo", "params": {"n": 1}}, headers=headers)
    body = assert_problem(client.post("/jobs", json={"type": "echo", "params": {"n": 2}}, headers=headers),
                          409, "idempotency-conflict")
    assert first.json()["job_id"] in body["detail"]
    assert len(items()) == 1


def test_the_same_key_from_another_tenant_is_another_job(client, auth, items) -> None:
    body = {"type": "echo", "params": {"n": 1}}
    acme = client.post("/jobs", json=body, headers={**auth("acme"), "Idempotency-Key": "k-1"})
    globex = client.post("/jobs", json=body, headers={**auth("globex"), "Idempotency-Key": "k-1"})
    assert acme.status_code == globex.status_code == 202
    assert acme.json()["job_id"] != globex.json()["job_id"]
    assert "idempotent-replayed" not in globex.headers
    assert len(items()) == 2


@pytest.mark.parametrize("key", ["has space", "x" * 256, "ümlaut"])
def test_an_unusable_idempotency_key_is_422(client, auth, items, key: str) -> None:
    response = client.post("/jobs", json={"type": "echo"}, headers={**auth(), "Idempotency-Key": key.encode()})
    assert_problem(response, 422)
    assert items() == []


# --- read ---------------------------------------------------------------------------------------------------


def test_get_shows_the_job_without_internal_fields(client, auth) -> None:
    job_id = submit(client, auth(), type="echo", params={"a": [1, 2.5, "ü"]}).json()["job_id"]
    job = client.get(f"/jobs/{job_id}", headers=auth()).json()
    assert job["job_id"] == job_id
    assert job["params"] == {"a": [1, 2.5, "ü"]}
    assert {"tenant", "lease_owner", "request_hash", "expires_at"}.isdisjoint(job)


@pytest.mark.parametrize("owner, kind", [("agent:AROAEXAMPLEAGENTROLE1:4f2a9c0d11e7b3a5", "agent"),
                                         ("batch:8f1c2d3e-0000-4000-8000-123456789abc", "batch"),
                                         ("lambda", "lambda")])
def test_the_tenant_sees_the_kind_of_worker_never_its_identity(client, auth, store, owner: str, kind: str) -> None:
    # given a job whose lease was taken by a worker and then lapsed (the sweeper's error names it)
    job_id = submit(client, auth(), type="echo").json()["job_id"]
    store.claim(job_id, owner, -1)  # a lease that has already lapsed
    lapsed = JobError(type="LeaseExpired", retryable=True,
                      message=f"no heartbeat from {owner} since the lease lapsed at 2026-01-01T00:00:00Z (attempt 1 of 3)")
    store.expire_lease(job_id, 1, lapsed, None)

    # when its tenant reads it
    response = client.get(f"/jobs/{job_id}", headers=auth())

    # then the history and the error say what kind of worker it was, and nothing of who
    job = response.json()
    assert owner == kind or owner not in response.text
    assert "AROA" not in response.text
    claimed = [entry for entry in job["history"] if entry["event"] == "claimed"]
    assert [entry["detail"] for entry in claimed] == [kind]
    assert job["error"]["message"].startswith(f"no heartbeat from {kind} since")


@pytest.mark.parametrize("action", ["get", "cancel"])
def test_another_tenants_job_is_404_and_untouched(client, auth, action: str) -> None:
    job_id = submit(client, auth("acme"), type="echo").json()["job_id"]
    if action == "get":
        response = client.get(f"/jobs/{job_id}", headers=auth("globex"))
    else:
        response = client.post(f"/jobs/{job_id}/cancel", headers=auth("globex"))
    body = assert_problem(response, 404, "not-found")
    assert "acme" not in response.text
    assert job_id in body["detail"]
    assert client.get(f"/jobs/{job_id}", headers=auth("acme")).json()["state"] == "QUEUED"


@pytest.mark.parametrize("job_id", ["nope", "job_0000000000000000000000000z"])
def test_an_unknown_or_malformed_id_is_404(client, auth, watched_aws_clients, job_id: str) -> None:
    watched_aws_clients.clear()
    assert_problem(client.get(f"/jobs/{job_id}", headers=auth()), 404)
    if job_id == "nope":
        assert watched_aws_clients.operations() == []  # refused before any read


# --- cancel ---------------------------------------------------------------------------------------------------


def test_cancel_of_a_queued_job_is_immediate_and_a_second_cancel_is_409(client, auth) -> None:
    job_id = submit(client, auth(), type="echo").json()["job_id"]

    cancelled = client.post(f"/jobs/{job_id}/cancel", headers=auth())
    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "CANCELLED"

    body = assert_problem(client.post(f"/jobs/{job_id}/cancel", headers=auth()), 409, "job-final")
    assert "CANCELLED" in body["detail"]


def test_cancel_of_a_running_job_requests_it(client, auth, store) -> None:
    job_id = submit(client, auth(), type="echo").json()["job_id"]
    store.claim(job_id, "worker-1", 60)

    response = client.post(f"/jobs/{job_id}/cancel", headers=auth())

    assert response.status_code == 200
    assert (response.json()["state"], response.json()["cancel_requested"]) == ("RUNNING", True)


def test_cancel_of_a_finished_job_is_409(client, auth, store) -> None:
    job_id = submit(client, auth(), type="echo").json()["job_id"]
    store.claim(job_id, "worker-1", 60)
    store.complete(job_id, 1, {"ok": True})
    assert_problem(client.post(f"/jobs/{job_id}/cancel", headers=auth()), 409, "job-final")
    assert client.get(f"/jobs/{job_id}", headers=auth()).json()["state"] == "SUCCEEDED"


# --- list -------------------------------------------------------------------------------------------------------


def test_list_pages_through_the_tenant_jobs_newest_first(client, auth) -> None:
    created = [submit(client, auth(), type="echo", params={"i": i}).json()["job_id"] for i in range(5)]
    submit(client, auth("globex"), type="echo")

    seen, sizes, cursor = [], [], None
    for _ in range(5):
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/jobs", params=params, headers=auth())
        assert page.status_code == 200
        seen += [item["job_id"] for item in page.json()["items"]]
        sizes.append(len(page.json()["items"]))
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break

    assert sizes == [2, 2, 1]
    assert seen == list(reversed(created))


def test_list_filters_by_state_and_type(client, auth) -> None:
    echo = submit(client, auth(), type="echo").json()["job_id"]
    sleep = submit(client, auth(), type="sleep").json()["job_id"]
    client.post(f"/jobs/{echo}/cancel", headers=auth())

    cancelled = client.get("/jobs", params={"state": "CANCELLED"}, headers=auth()).json()["items"]
    sleeping = client.get("/jobs", params={"type": "sleep"}, headers=auth()).json()["items"]
    assert [j["job_id"] for j in cancelled] == [echo]
    assert [j["job_id"] for j in sleeping] == [sleep]
    assert set(cancelled[0]) >= {"job_id", "type", "state", "route", "attempt", "created_at"}


@pytest.mark.parametrize("params, status", [({"limit": 0}, 422), ({"limit": 101}, 422), ({"state": "DONE"}, 422),
                                            ({"cursor": "garbage"}, 400)])
def test_list_refuses_bad_query_parameters(client, auth, params, status) -> None:
    body = assert_problem(client.get("/jobs", params=params, headers=auth()), status)
    assert body["errors"][0]["loc"][0] == "query"


def test_another_tenants_cursor_is_400(client, auth) -> None:
    for _ in range(2):
        submit(client, auth("globex"), type="echo")
    cursor = client.get("/jobs", params={"limit": 1}, headers=auth("globex")).json()["next_cursor"]
    assert cursor
    body = assert_problem(client.get("/jobs", params={"cursor": cursor}, headers=auth("acme")), 400, "invalid-cursor")
    assert body["errors"][0]["loc"] == ["query", "cursor"]


# --- job types and health -------------------------------------------------------------------------------------------


def test_job_types_describe_every_type_with_a_params_schema(client, auth) -> None:
    response = client.get("/job-types", headers=auth())
    assert response.status_code == 200
    types = {t["name"]: t for t in response.json()["items"]}
    assert set(BUILTIN) <= set(types)
    for info in types.values():
        assert info["params_schema"]["type"] == "object"
        assert info["allowed_targets"][0] == "auto"
    transcode = types["transcode"]["params_schema"]
    assert "video_id" in transcode["required"]
    assert "8K" in transcode["properties"]["resolution"]["enum"]
    assert types["genome_align"]["allowed_targets"] == ["auto", "private"]
    assert types["genome_align"]["data_classification"] == "restricted"


def test_health_is_200_when_the_table_and_every_queue_answer(client, auth) -> None:
    response = client.get("/health", headers=auth())
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"dynamodb": "ok", "sqs:lambda": "ok", "sqs:batch": "ok",
                                                          "sqs:private": "ok"}}


def test_health_is_503_naming_the_missing_queue(app, client, auth, settings) -> None:
    missing = settings.queue_url_private.rsplit("/", 1)[0] + "/no-such-queue"
    broken = settings.model_copy(update={"queue_url_private": missing})
    app.dependency_overrides[deps.settings_dep] = lambda: broken

    response = client.get("/health", headers=auth())

    body = assert_problem(response, 503, "unavailable")
    assert "sqs:private" in body["detail"]
    assert "sqs:lambda" not in body["detail"] and "dynamodb" not in body["detail"]
    assert response.headers["retry-after"]


def test_health_is_503_naming_a_missing_table(app, client, auth, settings) -> None:
    broken = settings.model_copy(update={"table_name": "no-such-table"})
    app.dependency_overrides[deps.settings_dep] = lambda: broken
    body = assert_problem(client.get("/health", headers=auth()), 503)
    assert "dynamodb" in body["detail"]


# --- every error is a problem ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method, path, status",
    [("GET", "/no-such-route", 404), ("DELETE", "/jobs", 405), ("PUT", "/jobs/job_0000000000000000000000000z", 405)],
)
def test_framework_errors_are_problems_too(client, auth, method, path, status) -> None:
    assert_problem(client.request(method, path, headers=auth()), status)


def test_every_domain_error_has_a_problem_mapping(app) -> None:
    # A domain error without a handler would fall through to the 500 handler.
    import jobbridge.errors as errors

    domain = {cls for cls in vars(errors).values()
              if isinstance(cls, type) and issubclass(cls, JobBridgeError) and cls is not JobBridgeError}
    handled = {cls for cls in app.exception_handlers if isinstance(cls, type)}
    assert {cls for cls in domain if not any(issubclass(cls, h) for h in handled - {Exception})} == set()
