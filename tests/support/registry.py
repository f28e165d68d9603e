"""A real ``docker-registry`` (distribution 2.8) process for tests, optionally behind auth.

``LocalRegistry`` runs ``/usr/bin/docker-registry serve`` on ``127.0.0.1:<free port>`` with its
filesystem storage in a private temporary directory::

    with LocalRegistry() as reg:                  # no auth
    with LocalRegistry(auth="basic") as reg:      # htpasswd (bcrypt) basic auth over plain HTTP
    with LocalRegistry(auth="token") as reg:      # Docker token auth, in-process token server

Token auth follows https://distribution.github.io/distribution/spec/auth/token/: the registry
answers 401 with ``WWW-Authenticate: Bearer realm="<token server>/token",service=...``; the
token server (a stdlib ``ThreadingHTTPServer`` in a daemon thread) checks HTTP Basic
credentials and returns an RS256 JWT signed by a throwaway RSA key whose self-signed
certificate is the registry's ``rootcertbundle``.  The JWT names its key either by libtrust
key ID (``kid``, the default) or by embedding the certificate (``x5c``); distribution 2.8
accepts both.

Everything listens on 127.0.0.1 only; ``__exit__`` terminates the registry, stops the token
server and removes the temporary directory.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self, cast

import httpx

AuthMode = Literal["basic", "token"]
KeyHeader = Literal["kid", "x5c"]

REGISTRY_BINARY = "/usr/bin/docker-registry"
# Long-running shared registries live on these ports; never hand them out.
RESERVED_PORTS = frozenset(range(5000, 5004))
TOKEN_SERVICE = "pycri-test-registry"
TOKEN_ISSUER = "pycri-test-token-issuer"
HTPASSWD_REALM = "pycri-test-realm"
# Every response of our registry carries this header with a per-instance nonce, so the
# readiness probe can never mistake some other server on the same port for ours.
MARKER_HEADER = "X-Pycri-Test-Registry"

_SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
# ASN.1 DigestInfo prefix for SHA-256 (RFC 8017, section 9.2, note 1).
_SHA256_DIGEST_INFO = bytes.fromhex("3031300d060960864801650304020105000420")


class RegistryStartError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Signing key material (RSA, generated once per test process with the openssl CLI)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    cert_pem: bytes
    cert_der: bytes
    spki_der: bytes
    kid: str
    modulus: int
    private_exponent: int

    def sign_rs256(self, data: bytes) -> bytes:
        """RSASSA-PKCS1-v1_5 with SHA-256 (JWS ``RS256``)."""
        k = (self.modulus.bit_length() + 7) // 8
        t = _SHA256_DIGEST_INFO + hashlib.sha256(data).digest()
        em = b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t
        sig = pow(int.from_bytes(em, "big"), self.private_exponent, self.modulus)
        return sig.to_bytes(k, "big")


def _openssl(*args: str, stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(["openssl", *args], input=stdin, capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed: {proc.stderr.decode(errors='replace')}")
    return proc.stdout


def libtrust_key_id(spki_der: bytes) -> str:
    """The key ID libtrust (and so distribution 2.8's token ``kid`` check) computes for a key.

    base32 of the first 240 bits of SHA-256 over the DER SubjectPublicKeyInfo, in 12
    colon-separated groups of 4 characters.
    """
    b32 = base64.b32encode(hashlib.sha256(spki_der).digest()[:30]).decode().rstrip("=")
    return ":".join(b32[i : i + 4] for i in range(0, len(b32), 4))


def _openssl_text_int(text: str, field: str) -> int:
    # `openssl pkey -text` prints e.g. "modulus:\n    00:c3:..\n    ..\npublicExponent: 65537".
    match = re.search(rf"^{field}:\s*\n((?:\s+[0-9a-f:]+\n)+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"cannot find {field} in openssl output")
    return int(re.sub(r"[^0-9a-f]", "", match.group(1)), 16)


@lru_cache(maxsize=1)
def signing_key() -> SigningKey:
    """A throwaway RSA-2048 key and its self-signed certificate (cached for the process)."""
    with tempfile.TemporaryDirectory(prefix="pycri-test-jwtkey-") as tmp:
        key_path, cert_path = Path(tmp) / "key.pem", Path(tmp) / "cert.pem"
        _openssl(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30",
            "-subj", "/CN=pycri test token signer",
            "-keyout", str(key_path), "-out", str(cert_path),
        )  # fmt: skip
        cert_pem = cert_path.read_bytes()
        cert_der = _openssl("x509", "-in", str(cert_path), "-outform", "DER")
        spki_der = _openssl("pkey", "-in", str(key_path), "-pubout", "-outform", "DER")
        text = _openssl("pkey", "-in", str(key_path), "-text", "-noout").decode()
    return SigningKey(
        cert_pem=cert_pem,
        cert_der=cert_der,
        spki_der=spki_der,
        kid=libtrust_key_id(spki_der),
        modulus=_openssl_text_int(text, "modulus"),
        private_exponent=_openssl_text_int(text, "privateExponent"),
    )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(header: dict[str, Any], claims: dict[str, Any], key: SigningKey) -> str:
    signing_input = _b64url(json.dumps(header).encode()) + "." + _b64url(json.dumps(claims).encode())
    return signing_input + "." + _b64url(key.sign_rs256(signing_input.encode()))


# --------------------------------------------------------------------------------------------
# htpasswd (bcrypt) hashing
# --------------------------------------------------------------------------------------------


def bcrypt_hash(password: str) -> str:
    """A bcrypt hash for an htpasswd line (distribution only accepts bcrypt).

    Uses the C library's crypt(3) (Debian 12's libxcrypt implements ``$2b$``) through the
    stdlib ``crypt`` module, falling back to ``htpasswd -nbB`` from apache2-utils.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            import crypt  # deprecated since 3.11, removed in 3.13
        except ImportError:
            crypt = None  # type: ignore[assignment]
    if crypt is not None:
        hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 5))
        if hashed is not None and hashed.startswith("$2b$"):
            return hashed
    htpasswd = shutil.which("htpasswd")
    if htpasswd is None:
        raise RuntimeError("no bcrypt implementation: need crypt(3) with $2b$ support or apache2-utils' htpasswd")
    out = subprocess.run([htpasswd, "-nbB", "user", password], capture_output=True, check=True, text=True).stdout
    return out.strip().split(":", 1)[1]


# --------------------------------------------------------------------------------------------
# Token server
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server answered (for assertions in tests)."""

    method: str  # "GET" or "POST" (OAuth2 password grant)
    service: str | None
    scopes: tuple[str, ...]
    username: str | None  # None: anonymous
    status: int  # HTTP status the token server answered with
    access: tuple[tuple[str, str, tuple[str, ...]], ...]  # granted (type, name, actions)


def parse_scope(scope: str) -> tuple[str, str, tuple[str, ...]] | None:
    """``repository:name/with:colon?:pull,push`` -> ("repository", "name...", ("pull", "push"))."""
    typ, sep, rest = scope.partition(":")
    name, sep2, actions = rest.rpartition(":")
    if not sep or not sep2 or not typ or not name:
        return None
    return typ, name, tuple(a for a in actions.split(",") if a)


class _TokenHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: TokenServer


class _TokenHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def _owner(self) -> TokenServer:
        return cast(_TokenHTTPServer, self.server).owner

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path != "/token":
            self._send(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
            return
        query = urllib.parse.parse_qs(url.query)
        scopes = tuple(s for value in query.get("scope", []) for s in value.split(" ") if s)
        service = query.get("service", [None])[0]
        creds = self._basic_credentials()
        status, body = self._owner._answer("GET", service, scopes, creds)
        self._send(status, body)

    def do_POST(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        form = urllib.parse.parse_qs(self.rfile.read(length).decode())
        if url.path != "/token":
            self._send(404, {"errors": [{"code": "NOT_FOUND", "message": "no such endpoint"}]})
            return
        if form.get("grant_type", [""])[0] != "password":
            self._send(400, {"error": "unsupported_grant_type"})
            return
        scopes = tuple(s for value in form.get("scope", []) for s in value.split(" ") if s)
        service = form.get("service", [None])[0]
        creds = (form.get("username", [""])[0], form.get("password", [""])[0])
        status, body = self._owner._answer("POST", service, scopes, creds)
        self._send(status, body)

    def _basic_credentials(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return ("", "")  # unusable credentials: refused
        try:
            user, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ("", "")
        return user, password

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="pycri-test-token-server"')
        self.end_headers()
        self.wfile.write(data)


class TokenServer:
    """Docker registry token server (GET /token and OAuth2 POST /token) for tests."""

    def __init__(
        self,
        *,
        username: str,
        password: str,
        anonymous_pull: bool = False,
        service: str = TOKEN_SERVICE,
        issuer: str = TOKEN_ISSUER,
        key_header: KeyHeader = "kid",
        ttl: int = 300,
    ) -> None:
        self.username = username
        self.password = password
        self.anonymous_pull = anonymous_pull
        self.service = service
        self.issuer = issuer
        self.key_header = key_header
        self.ttl = ttl
        self.key = signing_key()
        self._lock = threading.Lock()
        self._log: list[TokenRequest] = []
        self._server: _TokenHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        server = _TokenHTTPServer(("127.0.0.1", 0), _TokenHandler)
        server.owner = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, args=(0.05,), name="pycri-test-token-server", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            if self._thread.is_alive():
                raise RuntimeError("token server thread did not stop")
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("token server is not running")
        return int(self._server.server_address[1])

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    # bookkeeping -------------------------------------------------------------------------
    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._log)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._log)

    def reset_count(self) -> None:
        with self._lock:
            self._log.clear()

    # tokens ------------------------------------------------------------------------------
    def issue(
        self,
        access: list[tuple[str, str, tuple[str, ...]]],
        *,
        subject: str = "",
        ttl: int | None = None,
        audience: str | None = None,
        issuer: str | None = None,
        not_before: int | None = None,
    ) -> str:
        """Mint a JWT directly (e.g. expired or for a wrong audience, for negative tests)."""
        now = int(time.time())
        header: dict[str, Any] = {"typ": "JWT", "alg": "RS256"}
        if self.key_header == "kid":
            header["kid"] = self.key.kid
        else:
            header["x5c"] = [base64.b64encode(self.key.cert_der).decode()]
        claims = {
            "iss": self.issuer if issuer is None else issuer,
            "sub": subject,
            "aud": self.service if audience is None else audience,
            "exp": now + (self.ttl if ttl is None else ttl),
            "nbf": now - 1 if not_before is None else not_before,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": [{"type": t, "name": n, "actions": list(a)} for t, n, a in access],
        }
        return make_jwt(header, claims, self.key)

    def _answer(
        self, method: str, service: str | None, scopes: tuple[str, ...], creds: tuple[str, str] | None
    ) -> tuple[int, dict[str, Any]]:
        if creds is None:
            authenticated, user = False, None
            allowed = self.anonymous_pull
        else:
            authenticated = secrets.compare_digest(creds[0], self.username) and secrets.compare_digest(creds[1], self.password)
            allowed, user = authenticated, creds[0]
        access: list[tuple[str, str, tuple[str, ...]]] = []
        if allowed:
            for scope in scopes:
                parsed = parse_scope(scope)
                if parsed is None:
                    continue
                typ, name, actions = parsed
                granted = actions if authenticated else tuple(a for a in actions if a == "pull")
                if granted:
                    access.append((typ, name, granted))
        status = 200 if allowed else 401
        with self._lock:
            self._log.append(TokenRequest(method, service, scopes, user, status, tuple(access)))
        if not allowed:
            return 401, {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        token = self.issue(access, subject=user or "")
        issued_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, {"token": token, "access_token": token, "expires_in": self.ttl, "issued_at": issued_at}


# --------------------------------------------------------------------------------------------
# The registry
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1 (never one of the shared registries' ports)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in RESERVED_PORTS:
            return port


def port_in_use(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class LocalRegistry:
    """A distribution 2.8 registry on 127.0.0.1 with storage in a private temp directory."""

    def __init__(
        self,
        *,
        auth: AuthMode | None = None,
        username: str = "pycri",
        password: str = "pycri-secret",
        anonymous_pull: bool = False,
        token_key_header: KeyHeader = "kid",
        token_ttl: int = 300,
        startup_timeout: float = 20.0,
        log_level: str = "info",
    ) -> None:
        if auth not in (None, "basic", "token"):
            raise ValueError(f"unknown auth mode {auth!r}")
        self.auth: AuthMode | None = auth
        self.username = username
        self.password = password
        self.anonymous_pull = anonymous_pull
        self.token_key_header: KeyHeader = token_key_header
        self.token_ttl = token_ttl
        self.startup_timeout = startup_timeout
        self.log_level = log_level
        self.proc: subprocess.Popen[bytes] | None = None
        self.token_server: TokenServer | None = None
        self._tmp: Path | None = None
        self._port: int | None = None
        self._nonce = secrets.token_hex(8)
        self._final_log = ""

    # lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("registry already started")
        self._tmp = Path(tempfile.mkdtemp(prefix="pycri-test-registry-"))
        try:
            self.root.mkdir()
            if self.auth == "token":
                self.token_server = TokenServer(
                    username=self.username,
                    password=self.password,
                    anonymous_pull=self.anonymous_pull,
                    key_header=self.token_key_header,
                    ttl=self.token_ttl,
                )
                self.token_server.start()
                (self._tmp / "token-root.pem").write_bytes(self.token_server.key.cert_pem)
            elif self.auth == "basic":
                (self._tmp / "htpasswd").write_text(f"{self.username}:{bcrypt_hash(self.password)}\n")
            last_error = ""
            for _attempt in range(5):
                port = free_port()
                if self._spawn(port):
                    return
                last_error = self._read_log()
                if "address already in use" not in last_error:
                    break
            raise RegistryStartError(f"docker-registry did not start:\n{last_error}")
        except BaseException:
            self.stop()
            raise

    def _config(self, port: int) -> dict[str, Any]:
        assert self._tmp is not None
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": self.log_level, "formatter": "text", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root)},
                "delete": {"enabled": True},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {
                "addr": f"127.0.0.1:{port}",
                "secret": secrets.token_hex(16),
                "headers": {"X-Content-Type-Options": ["nosniff"], MARKER_HEADER: [self._nonce]},
            },
        }
        if self.auth == "basic":
            config["auth"] = {"htpasswd": {"realm": HTPASSWD_REALM, "path": str(self._tmp / "htpasswd")}}
        elif self.auth == "token":
            assert self.token_server is not None
            config["auth"] = {
                "token": {
                    "realm": self.token_server.realm,
                    "service": self.token_server.service,
                    "issuer": self.token_server.issuer,
                    "rootcertbundle": str(self._tmp / "token-root.pem"),
                }
            }
        return config

    def _spawn(self, port: int) -> bool:
        """Start the process on `port`; True once it answers, False if it exited."""
        assert self._tmp is not None
        config_path = self._tmp / "config.yml"
        # JSON is valid YAML, and distribution parses its config with a YAML parser.
        config_path.write_text(json.dumps(self._config(port), indent=2))
        # REGISTRY_* variables would override the config file; keep them out.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with open(self._tmp / "registry.log", "wb") as log:
            self.proc = subprocess.Popen(
                [REGISTRY_BINARY, "serve", str(config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self._tmp,
                start_new_session=True,
            )
        self._port = port
        deadline = time.monotonic() + self.startup_timeout
        with httpx.Client(trust_env=False, timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    self.proc = None
                    return False
                try:
                    r = client.get(f"http://127.0.0.1:{port}/v2/")
                except httpx.TransportError:
                    time.sleep(0.05)
                    continue
                if r.status_code in (200, 401) and r.headers.get(MARKER_HEADER) == self._nonce:
                    return True
                time.sleep(0.05)
        self._terminate()
        raise RegistryStartError(
            f"docker-registry did not answer on port {port} within {self.startup_timeout}s:\n{self._read_log()}"
        )

    def _terminate(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        if proc.returncode is None:
            raise RuntimeError(f"docker-registry pid {proc.pid} did not exit")

    def stop(self) -> None:
        try:
            self._terminate()
        finally:
            try:
                if self.token_server is not None:
                    self.token_server.stop()
            finally:
                if self._tmp is not None:
                    self._final_log = self._read_log()
                    shutil.rmtree(self._tmp, ignore_errors=True)
                    self._tmp = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # addresses ---------------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("registry not started")
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` (what goes in an image reference)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    @property
    def realm(self) -> str | None:
        """Token server URL (token auth) or htpasswd realm name (basic auth)."""
        if self.token_server is not None:
            return self.token_server.realm
        return HTPASSWD_REALM if self.auth == "basic" else None

    @property
    def service(self) -> str | None:
        return self.token_server.service if self.token_server is not None else None

    @property
    def tmpdir(self) -> Path:
        if self._tmp is None:
            raise RuntimeError("registry not started")
        return self._tmp

    @property
    def root(self) -> Path:
        """The filesystem storage driver's root directory."""
        return self.tmpdir / "storage"

    # token bookkeeping -------------------------------------------------------------------
    @property
    def token_requests(self) -> int:
        """How many requests the token server answered (0 unless auth="token")."""
        return self.token_server.request_count if self.token_server is not None else 0

    @property
    def token_request_log(self) -> list[TokenRequest]:
        return self.token_server.requests if self.token_server is not None else []

    def reset_token_requests(self) -> None:
        if self.token_server is not None:
            self.token_server.reset_count()

    def issue_token(self, repository: str, actions: tuple[str, ...] = ("pull",), **kwargs: Any) -> str:
        """Mint a token directly (kwargs as for ``TokenServer.issue``)."""
        if self.token_server is None:
            raise RuntimeError("registry does not use token auth")
        return self.token_server.issue([("repository", repository, actions)], **kwargs)

    # logs --------------------------------------------------------------------------------
    def _read_log(self) -> str:
        if self._tmp is None:
            return self._final_log
        try:
            return (self._tmp / "registry.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log(self) -> str:
        """The registry's output so far (kept after stop())."""
        return self._read_log()

    # storage tampering -------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        """``<root>/docker/registry/v2/blobs/sha256/<ab>/<abcdef...>/data``"""
        if not _SHA256_RE.match(digest):
            raise ValueError(f"not a sha256 digest: {digest!r}")
        hexpart = digest.removeprefix("sha256:")
        return self.root / "docker" / "registry" / "v2" / "blobs" / "sha256" / hexpart[:2] / hexpart / "data"

    def _existing_blob(self, digest: str) -> Path:
        path = self.blob_path(digest)
        if not path.is_file():
            raise FileNotFoundError(f"blob {digest} is not in registry storage ({path})")
        return path

    def corrupt_blob(self, digest: str, new_bytes: bytes | None = None) -> None:
        """Overwrite a stored blob; the registry serves the new bytes under the old digest.

        Without `new_bytes`, one byte in the middle is inverted (same size, wrong digest).
        Manifests are blobs too, so this works on manifest digests as well.
        """
        path = self._existing_blob(digest)
        if new_bytes is None:
            data = bytearray(path.read_bytes())
            if not data:
                raise ValueError("cannot flip a byte of an empty blob; pass new_bytes")
            data[len(data) // 2] ^= 0xFF
            new_bytes = bytes(data)
        path.write_bytes(new_bytes)

    def truncate_blob(self, digest: str, size: int) -> None:
        path = self._existing_blob(digest)
        with open(path, "r+b") as f:
            f.truncate(size)

    def remove_blob(self, digest: str) -> None:
        """Delete a blob's data from storage: GETs of it then answer 404 BLOB_UNKNOWN."""
        self._existing_blob(digest).unlink()


__all__ = [
    "HTPASSWD_REALM",
    "MARKER_HEADER",
    "RESERVED_PORTS",
    "TOKEN_ISSUER",
    "TOKEN_SERVICE",
    "AuthMode",
    "KeyHeader",
    "LocalRegistry",
    "RegistryStartError",
    "SigningKey",
    "TokenRequest",
    "TokenServer",
    "bcrypt_hash",
    "free_port",
    "libtrust_key_id",
    "make_jwt",
    "parse_scope",
    "port_in_use",
    "signing_key",
]
