"""Registry authentication, sans-IO: challenges, credentials, token requests and a token cache.

The caller does the HTTP: on a 401 it hands the ``WWW-Authenticate`` header to
:func:`parse_www_authenticate`, builds the token request with
:func:`token_request` (Docker token spec: a GET with optional Basic auth, or an
OAuth2 POST with ``grant_type=refresh_token`` when an identity token is known),
performs it, reads the reply with :func:`parse_token_response` and keeps the
token in a :class:`TokenCache`.  Nothing here reads the clock: times are
passed in as ``now`` (seconds, any monotonic origin).

Error messages never include passwords, tokens or decoded ``auth`` fields.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import string
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

DEFAULT_TOKEN_LIFETIME = 60
MAX_TOKEN_RESPONSE_BYTES = 1 << 20
"""A token server's answer is a small JSON object; anything longer is refused unread."""
DEFAULT_CLIENT_ID = "pycri"
DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")

_TCHAR = frozenset("!#$%&'*+-.^_`|~" + string.ascii_letters + string.digits)
_TOKEN68_CHARS = frozenset("-._~+/" + string.ascii_letters + string.digits)
_VALUE_STOP = frozenset(' \t,"')


class AuthError(ValueError):
    """Unusable authentication input: a malformed header, credential, config file or token reply."""


@dataclass(frozen=True)
class Challenge:
    """One RFC 7235 challenge: the lowercased scheme and its parameters (lowercased names)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None

    @property
    def realm(self) -> str | None:
        return self.params.get("realm")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str) -> AuthError:
        return AuthError(f"malformed WWW-Authenticate header at offset {self.pos}: {message}")

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_spaces(self) -> bool:
        start = self.pos
        while not self.at_end() and self.text[self.pos] in " \t":
            self.pos += 1
        return self.pos > start

    def skip_separators(self) -> None:
        while not self.at_end() and self.peek() in (" ", "\t", ","):
            self.pos += 1

    def run(self, chars: frozenset[str]) -> str:
        start = self.pos
        while not self.at_end() and self.text[self.pos] in chars:
            self.pos += 1
        return self.text[start : self.pos]

    def token68(self) -> str:
        value = self.run(_TOKEN68_CHARS)
        return value + self.run(frozenset("=")) if value else ""

    def value(self) -> str:
        if self.peek() != '"':
            start = self.pos
            while not self.at_end() and self.text[self.pos] not in _VALUE_STOP and self.text[self.pos].isprintable():
                self.pos += 1
            return self.text[start : self.pos]
        self.pos += 1
        out: list[str] = []
        while True:
            if self.at_end():
                raise self.error("unterminated quoted string")
            char = self.text[self.pos]
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == "\\":
                if self.at_end():
                    raise self.error("unterminated quoted string")
                char = self.text[self.pos]
                self.pos += 1
            if char != "\t" and (ord(char) < 0x20 or ord(char) == 0x7F):
                raise self.error("control character in quoted string")
            out.append(char)


def parse_www_authenticate(header: str) -> list[Challenge]:
    """Parse a ``WWW-Authenticate`` value into its challenges; raises :class:`AuthError` when malformed."""
    s = _Scanner(header)
    challenges: list[Challenge] = []
    while True:
        s.skip_separators()
        if s.at_end():
            return challenges
        scheme = s.run(_TCHAR)
        if not scheme:
            raise s.error(f"expected an authentication scheme, found {s.peek()!r}")
        params: dict[str, str] = {}
        token68: str | None = None
        if s.skip_spaces() and not s.at_end() and s.peek() != ",":
            start = s.pos
            candidate = s.token68()
            s.skip_spaces()
            if candidate and (s.at_end() or s.peek() == ","):
                token68 = candidate
            else:
                s.pos = start
                params = _parse_params(s)
        s.skip_spaces()
        if not s.at_end() and s.peek() != ",":
            raise s.error(f"expected ',' after the {scheme[:40]!r} challenge, found {s.peek()!r}")
        challenges.append(Challenge(scheme=scheme.lower(), params=params, token68=token68))


def _parse_params(s: _Scanner) -> dict[str, str]:
    """``#auth-param`` after a scheme; stops before a token that starts the next challenge."""
    params: dict[str, str] = {}
    separator = s.pos
    while True:
        name = s.run(_TCHAR)
        s.skip_spaces()
        if not name or s.peek() != "=":
            if not params:
                raise s.error("expected name=value parameters or a token68 after the scheme")
            s.pos = separator  # back before the ',' that ends this challenge
            return params
        s.pos += 1
        s.skip_spaces()
        quoted = s.peek() == '"'
        value = s.value()
        key = name.lower()
        if not value and not quoted:
            raise s.error(f"parameter {key[:40]!r} has no value")
        if key in params:
            raise s.error(f"parameter {key[:40]!r} given twice")
        params[key] = value
        s.skip_spaces()
        if s.at_end() or s.peek() != ",":
            return params
        separator = s.pos
        s.skip_separators()
        if s.at_end():
            return params


@dataclass(frozen=True, repr=False)
class Credentials:
    """Registry credentials as CRI's ``AuthConfig`` carries them (its ``auth`` field already decoded)."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def __repr__(self) -> str:
        hidden = [name for name in ("password", "identity_token", "registry_token") if getattr(self, name)]
        return f"Credentials(username={self.username!r}, set={hidden})"


def decode_auth(auth: str) -> tuple[str, str]:
    """Decode a base64 ``user:password`` ``auth`` field (NULs trimmed from the password)."""
    try:
        decoded = base64.b64decode(auth, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise AuthError("the 'auth' field is not valid base64 of UTF-8 text") from None
    username, colon, password = decoded.partition(":")
    if not colon:
        raise AuthError("the decoded 'auth' field is not of the form user:password")
    return username, password.strip("\x00")


def credentials_from_auth_config(
    username: str = "", password: str = "", auth: str = "", identity_token: str = "", registry_token: str = ""
) -> Credentials | None:
    """Credentials from CRI ``AuthConfig`` fields; None when all are empty (anonymous).

    An explicit username wins over ``auth``; otherwise ``auth`` is decoded.
    """
    if not username and auth:
        username, password = decode_auth(auth)
    creds = Credentials(username=username, password=password, identity_token=identity_token, registry_token=registry_token)
    return None if creds == Credentials() else creds


def basic_header(creds: Credentials) -> str:
    """The ``Authorization`` value for HTTP Basic authentication with ``creds``."""
    if not creds.username:
        raise AuthError("Basic authentication needs a username")
    return "Basic " + base64.b64encode(f"{creds.username}:{creds.password}".encode()).decode("ascii")


def bearer_header(token: str) -> str:
    """The ``Authorization`` value for a bearer token (a fetched token or CRI's ``registry_token``)."""
    return f"Bearer {token}"


def scope_for(repository: str, actions: Sequence[str] = ("pull",)) -> str:
    """The token scope for ``actions`` on ``repository``: ``repository:<repo>:pull``."""
    return f"repository:{repository}:{','.join(actions)}"


def credentials_fingerprint(creds: Credentials | None) -> str:
    """A stable, non-secret identity for ``creds`` ("" when anonymous) to keep tokens apart in a cache."""
    if creds is None or creds == Credentials():
        return ""
    secret = "\0".join((creds.username, creds.password, creds.identity_token, creds.registry_token))
    return hashlib.sha256(secret.encode()).hexdigest()[:32]


class TokenKey(NamedTuple):
    """What a token was issued for; ``account`` is :func:`credentials_fingerprint` of the credentials used."""

    realm: str
    service: str
    scope: str
    account: str = ""


@dataclass(frozen=True, repr=False)
class TokenRequest:
    """The HTTP request that fetches a bearer token; ``key`` is its :class:`TokenCache` key."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None
    key: TokenKey

    def __repr__(self) -> str:
        return f"TokenRequest(method={self.method!r}, url={self.url!r}, headers={sorted(self.headers)}, key={self.key!r})"


def token_request(
    challenge: Challenge,
    scope: str | Sequence[str] | None,
    creds: Credentials | None = None,
    *,
    client_id: str = DEFAULT_CLIENT_ID,
) -> TokenRequest:
    """Describe the token request answering a Bearer ``challenge`` for ``scope``.

    The challenge's own ``scope`` parameter is requested too.  With an identity
    token this is the OAuth2 ``POST`` (``grant_type=refresh_token``); otherwise
    a ``GET realm?service=..&scope=..`` with Basic auth when a username and
    password are known.
    """
    if challenge.scheme != "bearer":
        raise AuthError(f"a token request needs a Bearer challenge, not {challenge.scheme!r}")
    realm = challenge.realm
    if not realm:
        raise AuthError("the Bearer challenge has no realm")
    parts = urllib.parse.urlsplit(realm)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise AuthError(f"the Bearer realm {realm[:200]!r} is not an http(s) URL")
    service = challenge.params.get("service", "")
    wanted = [scope] if isinstance(scope, str) else list(scope or ())
    scopes: list[str] = []
    for item in [*wanted, *challenge.params.get("scope", "").split(" ")]:
        if item and item not in scopes:
            scopes.append(item)
    key = TokenKey(realm, service, " ".join(scopes), credentials_fingerprint(creds))
    if creds is not None and creds.identity_token:
        form = [("grant_type", "refresh_token"), ("refresh_token", creds.identity_token), ("client_id", client_id)]
        form += [("service", service)] if service else []
        form += [("scope", " ".join(scopes))] if scopes else []
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        return TokenRequest("POST", realm, headers, urllib.parse.urlencode(form).encode("ascii"), key)
    query = [("service", service)] if service else []
    query += [("scope", item) for item in scopes]
    headers = {}
    if creds is not None and creds.username and creds.password:
        query.append(("account", creds.username))
        headers["Authorization"] = basic_header(creds)
    url = realm
    if query:
        base, _, fragment = realm.partition("#")
        url = base + ("&" if parts.query else "?") + urllib.parse.urlencode(query)
        url += f"#{fragment}" if fragment else ""
    return TokenRequest("GET", url, headers, None, key)


@dataclass(frozen=True, repr=False)
class Token:
    """A bearer token and its lifetime in seconds (at least 60, as the token spec requires)."""

    token: str
    expires_in: int = DEFAULT_TOKEN_LIFETIME
    issued_at: str | None = None
    refresh_token: str | None = None

    def __repr__(self) -> str:
        return f"Token(expires_in={self.expires_in}, issued_at={self.issued_at!r})"


def parse_token_response(body: bytes) -> Token:
    """Read a token server's JSON reply (``token`` or ``access_token``, ``expires_in``, ``issued_at``)."""
    if len(body) > MAX_TOKEN_RESPONSE_BYTES:
        raise AuthError(f"token response is over {MAX_TOKEN_RESPONSE_BYTES} bytes")
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise AuthError(f"token response is not valid JSON ({type(exc).__name__} at {getattr(exc, 'pos', '?')})") from None
    if not isinstance(data, dict):
        raise AuthError(f"token response is a JSON {type(data).__name__}, not an object")
    token = data.get("access_token") or data.get("token")
    if not token:
        raise AuthError("token response has no 'token' or 'access_token'")
    if not isinstance(token, str):
        raise AuthError(f"token response's token is {type(token).__name__!r}, not a string")
    expires_in = data.get("expires_in")
    lifetime = DEFAULT_TOKEN_LIFETIME
    if isinstance(expires_in, int | float) and not isinstance(expires_in, bool):
        lifetime = max(DEFAULT_TOKEN_LIFETIME, min(int(expires_in), 2**31))
    issued_at = data.get("issued_at")
    refresh = data.get("refresh_token")
    return Token(
        token=token,
        expires_in=lifetime,
        issued_at=issued_at if isinstance(issued_at, str) else None,
        refresh_token=refresh if isinstance(refresh, str) and refresh else None,
    )


class TokenCache:
    """Bearer tokens by :class:`TokenKey`, forgotten a little before they expire."""

    def __init__(self, *, max_entries: int = 1024, early_expiry: float = 5.0) -> None:
        self.max_entries = max_entries
        self.early_expiry = early_expiry
        self._entries: dict[TokenKey, tuple[Token, float]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: TokenKey, now: float) -> Token | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        token, expires_at = entry
        if now >= expires_at:
            del self._entries[key]
            return None
        return token

    def put(self, key: TokenKey, token: Token, now: float) -> None:
        margin = min(self.early_expiry, token.expires_in / 2)
        self._entries.pop(key, None)
        if len(self._entries) >= self.max_entries:
            self._entries = {k: v for k, v in self._entries.items() if v[1] > now}
            while len(self._entries) >= self.max_entries:
                del self._entries[next(iter(self._entries))]
        self._entries[key] = (token, now + token.expires_in - margin)

    def invalidate(self, key: TokenKey) -> None:
        """Forget ``key``'s token (e.g. after the registry refused it)."""
        self._entries.pop(key, None)


def normalize_host(key: str) -> str:
    """A registry key as written in config.json reduced to ``host[:port][/namespace]``, Docker Hub as docker.io.

    A key with a URL scheme (``https://index.docker.io/v1/``) loses its path;
    one without keeps it as a namespace (``quay.io/org``).
    """
    lowered = key.strip().lower()
    stripped = lowered.removeprefix("http://").removeprefix("https://")
    if stripped != lowered:
        stripped = stripped.split("/", 1)[0]
    stripped = stripped.rstrip("/")
    host, slash, rest = stripped.partition("/")
    if host in DOCKER_HUB_KEYS:
        host = DOCKER_HUB_KEYS[0]
    return host + slash + rest


# config.json entry field -> credentials_from_auth_config() argument.
_ENTRY_FIELDS = (
    ("auth", "auth"),
    ("username", "username"),
    ("password", "password"),
    ("identitytoken", "identity_token"),
    ("registrytoken", "registry_token"),
)


@dataclass(frozen=True)
class DockerConfig:
    """The ``auths`` of a Docker ``config.json``, keyed by :func:`normalize_host` (first entry of a key wins)."""

    auths: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    source: str = "<string>"

    @classmethod
    def parse(cls, text: str | bytes, source: str = "<string>") -> DockerConfig:
        try:
            data: Any = json.loads(text)
        except ValueError as exc:
            raise AuthError(f"{source}: not valid JSON ({type(exc).__name__} at {getattr(exc, 'pos', '?')})") from None
        if not isinstance(data, dict):
            raise AuthError(f"{source}: a docker config must be a JSON object")
        auths = data.get("auths", {})
        if not isinstance(auths, dict):
            raise AuthError(f"{source}: 'auths' must be an object")
        result: dict[str, dict[str, str]] = {}
        for key, entry in auths.items():
            if not isinstance(entry, dict):
                raise AuthError(f"{source}: auths[{key!r}] must be an object")
            fields: dict[str, str] = {}
            for json_name, name in _ENTRY_FIELDS:
                value = entry.get(json_name, "")
                if not isinstance(value, str):
                    raise AuthError(f"{source}: auths[{key!r}].{json_name} must be a string")
                fields[name] = value
            result.setdefault(normalize_host(key), fields)
        return cls(auths=result, source=source)

    @classmethod
    def load(cls, path: str | Path) -> DockerConfig:
        """Read a config.json; a missing file has no credentials."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            return cls(source=str(path))
        except OSError as exc:
            raise AuthError(f"{path}: cannot read: {exc.strerror or exc}") from None
        return cls.parse(data, str(path))

    def lookup(self, host: str, repository: str | None = None) -> Credentials | None:
        """Credentials for ``host`` (any of the accepted spellings); with ``repository`` the most
        specific ``host/namespace`` key wins.  Entries without credentials are skipped."""
        base = normalize_host(host).split("/", 1)[0]
        keys = []
        if repository:
            parts = repository.strip("/").split("/")
            keys = [f"{base}/{'/'.join(parts[:n])}" for n in range(len(parts), 0, -1)]
        for key in [*keys, base]:
            entry = self.auths.get(key)
            if entry is None:
                continue
            try:
                creds = credentials_from_auth_config(**entry)
            except AuthError as exc:
                raise AuthError(f"{self.source}: auths[{key!r}]: {exc}") from None
            if creds is not None:
                return creds
        return None
