"""The CNCF Distribution registry (Debian's ``docker-registry``) on loopback, over TLS.

Two ways to authenticate, as real registries do: htpasswd (HTTP basic, as a
self-hosted registry is usually set up) and the bearer-token challenge (Docker
Hub, GHCR, Harbor, ECR, Artifact Registry), where a token server checks the
user's password and hands out a JWT that the registry verifies with the token
server's certificate. The token server here is a small stand-in for that one
endpoint, written to Distribution's token specification and proven by the real
registry accepting its tokens (and by skopeo logging in through it).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

SERVICE = "hubpin-test-registry"
USER, PASSWORD = "ci-bot", "s3cret-Pa55"
ISSUER = "hubpin-test-issuer"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenServer:
    """Hands out registry JWTs (ES256, x5c) to users whose basic credentials match."""

    def __init__(self, folder: Path, tls: tuple[Path, Path], users: dict[str, str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        now = datetime.datetime.now(datetime.timezone.utc)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(7)
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
        )
        self.cert_path = folder / "token-signer.pem"
        self.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        self.x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self.users = users
        self.requests: list[str] = []  # the scope of each token asked for
        # How many of the next tokens are already expired when handed out (past the
        # registry's 60 s leeway), as a token server whose clock runs behind, or a token
        # revoked early, would leave a client: the registry answers 401 to the first use.
        self.stale = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                scopes = query.get("scope", [])
                server.requests.append(" ".join(scopes))
                user = server.check(self.headers.get("Authorization", ""))
                if user is None and self.headers.get("Authorization"):
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": server.token(user, scopes), "expires_in": 300})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def check(self, header: str) -> str | None:
        if not header.startswith("Basic "):
            return None
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
        return user if self.users.get(user) == password else None

    def token(self, user: str | None, scopes: list[str]) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        access = []
        for scope in scopes if user else []:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        now = int(time.time())
        if self.stale > 0:
            self.stale -= 1
            now -= 900
        claims = {
            "iss": ISSUER,
            "sub": user or "",
            "aud": SERVICE,
            "exp": now + 300,
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        header = {"typ": "JWT", "alg": "ES256", "x5c": [self.x5c]}
        signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(
            self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
        )
        return f"{signing_input}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Registry:
    """One ``docker-registry serve`` on an ephemeral loopback port, TLS with the test CA.

    ``auth`` is ``"htpasswd"`` (basic), ``"token"`` (bearer, through :class:`TokenServer`) or
    ``"none"``; without ``tls`` it speaks plain http (hubpin falls back to it on loopback).
    """

    def __init__(
        self,
        folder: Path,
        tls: tuple[Path, Path] | None,
        users: dict[str, str],
        auth: str = "htpasswd",
    ) -> None:
        import bcrypt

        self.folder = folder
        self.users = users
        self.token_server: TokenServer | None = None
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "htpasswd").write_text(
            "".join(
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(4)).decode()}\n"
                for user, password in users.items()
            )
        )
        if auth == "token":
            assert tls is not None
            self.token_server = TokenServer(folder, tls, users)
            auth_block = (
                f"  token:\n    realm: {self.token_server.url}\n    service: {SERVICE}\n"
                f"    issuer: {ISSUER}\n    rootcertbundle: {self.token_server.cert_path}\n"
            )
        elif auth == "htpasswd":
            auth_block = f"  htpasswd:\n    realm: hubpin-test\n    path: {folder / 'htpasswd'}\n"
        else:  # "none": anyone may pull and push (the benchmark's plain-http registry)
            auth_block = ""
        tls_block = f"  tls:\n    certificate: {tls[0]}\n    key: {tls[1]}\n" if tls else ""
        (folder / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: true\n"
            f"storage:\n  filesystem:\n    rootdirectory: {folder / 'data'}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: 127.0.0.1:0\n  secret: hubpin-test\n{tls_block}"
            + (f"auth:\n{auth_block}" if auth_block else "")
        )
        self.log_path = folder / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.host = ""

    def start(self) -> Registry:
        binary = shutil.which("docker-registry")
        assert binary, "docker-registry is not installed (apt-get install -y docker-registry)"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        # The registry reads REGISTRY_* variables as configuration (REGISTRY_AUTH_FILE would be
        # auth.file), so it gets an environment without them.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.process = subprocess.Popen(
            [binary, "serve", str(self.folder / "config.yml")],
            stdout=self.log,
            stderr=self.log,
            env=env,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = re.search(r"listening on 127\.0\.0\.1:(\d+)", self.log_path.read_text())
            if found:
                self.host = f"127.0.0.1:{found.group(1)}"
                return self
            assert self.process.poll() is None, self.log_path.read_text()
            time.sleep(0.05)
        raise AssertionError(f"registry did not start: {self.log_path.read_text()}")

    def requests(self, method: str, path_contains: str = "") -> int:
        """How many requests with ``method`` (and a URI containing ``path_contains``) it answered."""
        pattern = re.compile(r"http\.request\.method=(\w+) .*?http\.request\.uri=\"?([^\" ]*)")
        count = 0
        for line in self.log_path.read_text().splitlines():
            if "response completed" not in line:
                continue
            found = pattern.search(line)
            if found and found.group(1) == method and path_contains in found.group(2):
                count += 1
        return count

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
            self.log.close()
        if self.token_server is not None:
            self.token_server.stop()


@dataclass
class OciLogin:
    """A containers auth file (``REGISTRY_AUTH_FILE``) and the test CA, for hubpin and skopeo."""

    auth: Path
    ca: Path

    def allow(self, registry: Registry, user: str = USER, password: str = PASSWORD) -> None:
        """Log in to ``registry`` (as ``skopeo login`` would write it); "" logs out of all."""
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        auths = {registry.host: {"auth": token}} if user else {}
        self.auth.write_text(json.dumps({"auths": auths}))

    def skopeo(self, *args: str, arch: str | None = None) -> str:
        """Run skopeo with this login and CA (as if on ``arch``); its stdout (the test fails if
        skopeo does)."""
        certs = self.ca.parent / "skopeo-certs"
        certs.mkdir(exist_ok=True)
        shutil.copy(self.ca, certs / "ca.crt")
        tls = ["--src-cert-dir", str(certs), "--dest-cert-dir", str(certs)]
        if args[0] != "copy":
            tls = ["--cert-dir", str(certs)]
        platform = ["--override-arch", arch] if arch else []
        command = ["skopeo", *platform, args[0], "--authfile", str(self.auth), *tls, *args[1:]]
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout


class CuttingProxy:
    """A TCP relay in front of a registry (TLS passes through untouched) that cuts one
    connection once after ``cut_after`` bytes have gone from the client to the registry on
    it: a network that drops mid-upload. ``host`` is where hubpin should connect."""

    def __init__(self, target: str) -> None:
        import socket

        self.target = target.rpartition(":")
        self.cut_after: int | None = None
        self.cuts = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection((self.target[0], int(self.target[2])))
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, source: object, sink: object, counted: bool) -> None:
        import socket

        assert isinstance(source, socket.socket) and isinstance(sink, socket.socket)
        sent = 0
        try:
            while data := source.recv(1 << 16):
                sent += len(data)
                if counted and self.cut_after is not None and sent > self.cut_after:
                    self.cut_after, self.cuts = None, self.cuts + 1
                    sink.sendall(data[: len(data) // 2])
                    raise OSError("cut")
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def stop(self) -> None:
        self.server.close()
