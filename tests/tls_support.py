"""Real TLS on loopback for transport tests: a self-signed certificate (``cryptography``), an HTTPS
server that answers the agent's /agent routes, and a CONNECT proxy that records every byte the
client sends through the tunnel (what a proxy, or anyone on the proxy's network, can read).

    cert = self_signed(tmp_path)                       # cert.pem / key.pem for 127.0.0.1 and localhost
    with HttpsApi(cert) as api, ConnectProxy() as proxy:
        ... AgentApi(api.url, ..., ca_file=cert.cert_file, proxy_url=proxy.url) ...
        proxy.tunnelled   # bytes after CONNECT, client -> server
        api.requests      # what the API received (method, path, headers, body)
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import select
import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Cert:
    cert_file: Path
    key_file: Path


def self_signed(directory: Path, common_name: str = "127.0.0.1") -> Cert:
    """A throwaway RSA key and a self-signed certificate valid for 127.0.0.1 and localhost."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                    x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return Cert(cert_file, key_file)


# --- the API ----------------------------------------------------------------------------------------


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class HttpsApi:
    """An HTTPS server on 127.0.0.1 answering every POST as the /agent routes answer a claim of a job
    that does not exist (404 problem), which is what the agent's start-up probe expects."""

    def __init__(self, cert: Cert) -> None:
        self.requests: list[Received] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                outer.requests.append(Received("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                answer = json.dumps({"type": "about:blank", "title": "Not Found", "status": 404,
                                     "detail": "job not found", "errors": []}).encode()
                self.send_response(404)
                self.send_header("content-type", "application/problem+json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                return

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert.cert_file, cert.key_file)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self.port = self._server.server_address[1]
        self.url = f"https://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, name="https-api", daemon=True)

    def __enter__(self) -> "HttpsApi":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


# --- the proxy --------------------------------------------------------------------------------------


@dataclass
class Tunnel:
    target: str
    headers: dict[str, str]
    sent: bytearray = field(default_factory=bytearray)  # client -> server, after CONNECT


class ConnectProxy:
    """A CONNECT-only forward proxy on 127.0.0.1 (like squid's port 3128). With ``credentials``
    ("user:pass") it demands Basic proxy authentication (407 otherwise)."""

    def __init__(self, credentials: str | None = None) -> None:
        self.credentials = credentials
        self.tunnels: list[Tunnel] = []
        self.refused: list[dict[str, str]] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, name="connect-proxy", daemon=True)

    @property
    def tunnelled(self) -> bytes:
        return b"".join(bytes(t.sent) for t in self.tunnels)

    def __enter__(self) -> "ConnectProxy":
        self._accept.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._listener.close()
        self._accept.join(timeout=10)
        for thread in self._threads:
            thread.join(timeout=10)

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._handle, args=(client,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _handle(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = client.recv(4096)
                if not chunk:
                    return
                head += chunk
            head, _, rest = head.partition(b"\r\n\r\n")
            request, *lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request.split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            if method != "CONNECT":
                client.sendall(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n")
                return
            if self.credentials is not None:
                expected = "Basic " + base64.b64encode(self.credentials.encode()).decode()
                if headers.get("proxy-authorization") != expected:
                    self.refused.append(headers)
                    client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                                   b"Proxy-Authenticate: Basic realm=\"test\"\r\ncontent-length: 0\r\n\r\n")
                    return
            tunnel = Tunnel(target, headers, bytearray(rest))
            self.tunnels.append(tunnel)
            host, _, port = target.rpartition(":")
            with socket.create_connection((host, int(port)), timeout=10) as upstream:
                if rest:
                    upstream.sendall(rest)
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                self._relay(client, upstream, tunnel)

    def _relay(self, client: socket.socket, upstream: socket.socket, tunnel: Tunnel) -> None:
        try:
            while not self._stop.is_set():
                readable, _, _ = select.select([client, upstream], [], [], 0.2)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        tunnel.sent.extend(data)
                        upstream.sendall(data)
                    else:
                        client.sendall(data)
        except ConnectionError:
            return  # either end hung up mid-stream (a refused TLS handshake): the tunnel ends
