"""The fuzz tier: the FastAPI app in process (ASGI, no network), in verify mode with an RSA key
made here, on template.yaml's table and queues in moto's in-process ``mock_aws``.

``JOBBRIDGE_FUZZ_EXAMPLES`` bounds the examples per operation (``make test``: a short run;
``make fuzz``: a long one).
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import Any, Iterator

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto import mock_aws

from jobbridge import aws
from jobbridge.config import Settings, get_settings

from fuzz_support import AUDIENCE, ISSUER, REGION


@pytest.fixture(scope="module", autouse=True)
def _offline() -> Iterator[None]:
    """Dummy credentials, no endpoint, and no IP connection at all: the fuzzer reaches the app in
    process and the app reaches moto in process."""
    saved = dict(os.environ)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        os.environ.pop(name, None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION})
    real_connect = socket.socket.connect

    def refuse(sock: socket.socket, address: Any) -> Any:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            raise AssertionError(f"the fuzz tier must not use the network (tried {address!r})")
        return real_connect(sock, address)

    socket.socket.connect = refuse  # type: ignore[method-assign]
    aws.reset_clients()
    get_settings.cache_clear()
    try:
        yield
    finally:
        socket.socket.connect = real_connect  # type: ignore[method-assign]
        os.environ.clear()
        os.environ.update(saved)
        aws.reset_clients()
        get_settings.cache_clear()


@pytest.fixture(scope="session")
def signing_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def fuzz_settings(tmp_path_factory: pytest.TempPathFactory, signing_key: rsa.RSAPrivateKey) -> Iterator[Settings]:
    """template.yaml's resources in a mock_aws that lives for the module."""
    from jobbridge_local.resources import create_resources
    from jobbridge_local.template import LocalContext, load_template

    key_file: Path = tmp_path_factory.mktemp("jwt") / "public.pem"
    key_file.write_bytes(signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with mock_aws():
        session = boto3.session.Session(region_name=REGION)
        made = create_resources("http://moto.in-process.invalid", template=load_template(),
                                context=LocalContext(stack_name=f"fuzz-{uuid.uuid4().hex[:8]}", region=REGION),
                                client_factory=lambda service: session.client(service))
        yield Settings(
            table_name=made.table("JobsTable").name,
            queue_url_lambda=made.queue("PublicLambdaQueue").url,
            queue_url_batch=made.queue("PublicBatchQueue").url,
            queue_url_private=made.queue("PrivateQueue").url,
            auth_mode="verify", jwt_issuer=ISSUER, jwt_audience=AUDIENCE, jwt_public_key_file=str(key_file),
        )


