from __future__ import annotations

import base64
import json
import urllib.parse
from pathlib import Path

import pytest

from pycri.images import auth
from pycri.images.auth import AuthError, Challenge, Credentials, Token, TokenCache, TokenKey

DOCKER_HUB_CHALLENGE = (
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"'
)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --- WWW-Authenticate -------------------------------------------------------


def test_docker_hub_challenge() -> None:
    assert auth.parse_www_authenticate(DOCKER_HUB_CHALLENGE) == [
        Challenge(
            scheme="bearer",
            params={
                "realm": "https://auth.docker.io/token",
                "service": "registry.docker.io",
                "scope": "repository:library/busybox:pull",
            },
        )
    ]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('Basic realm="x"', [Challenge("basic", {"realm": "x"})]),
        ("Basic", [Challenge("basic")]),
        ("BASIC Realm=simple", [Challenge("basic", {"realm": "simple"})]),
        ('Basic realm="a, b=c"', [Challenge("basic", {"realm": "a, b=c"})]),
        (r'Basic realm="say \"hi\" \\ \o/"', [Challenge("basic", {"realm": r'say "hi" \ o/'})]),
        ('Basic realm=""', [Challenge("basic", {"realm": ""})]),
        ('Bearer realm = "x" , service="s"', [Challenge("bearer", {"realm": "x", "service": "s"})]),
        ("Bearer realm=https://auth.example.com/token", [Challenge("bearer", {"realm": "https://auth.example.com/token"})]),
        (
            'Basic realm="x", Bearer realm="y",scope="a b"',
            [Challenge("basic", {"realm": "x"}), Challenge("bearer", {"realm": "y", "scope": "a b"})],
        ),
        ("Negotiate abc+/==, NTLM", [Challenge("negotiate", token68="abc+/=="), Challenge("ntlm")]),
        ("Basic, Bearer", [Challenge("basic"), Challenge("bearer")]),
        (' , Basic realm="x" ,, , ', [Challenge("basic", {"realm": "x"})]),
        ('Basic realm="x",, Bearer realm="y"', [Challenge("basic", {"realm": "x"}), Challenge("bearer", {"realm": "y"})]),
        ('Basic realm="ünïcode"', [Challenge("basic", {"realm": "ünïcode"})]),
        (
            r'Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple"',  # RFC 7235 section 4.1
            [
                Challenge("newauth", {"realm": "apps", "type": "1", "title": 'Login to "apps"'}),
                Challenge("basic", {"realm": "simple"}),
            ],
        ),
        ("", []),
    ],
)
def test_parse_www_authenticate(header: str, expected: list[Challenge]) -> None:
    assert auth.parse_www_authenticate(header) == expected


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ('Bearer realm="https://x', "unterminated quoted string"),
        ('Bearer realm="x\\', "unterminated quoted string"),
        ('Bearer realm="a\nb"', "control character in quoted string"),
        ('"Bearer"', "expected an authentication scheme, found '\"'"),
        ("=x", "expected an authentication scheme, found '='"),
        ("Bearer foo bar", "expected name=value parameters or a token68 after the scheme"),
        ('Bearer realm="a"junk', "expected ',' after the 'Bearer' challenge, found 'j'"),
        ('Bearer realm="a" service="b"', "expected ',' after the 'Bearer' challenge, found 's'"),
        ('Bearer realm="a", REALM="b"', "parameter 'realm' given twice"),
        ('Bearer realm="a", service=, x=y', "parameter 'service' has no value"),
        ("Bearer\x00realm=x", "expected ',' after the 'Bearer' challenge"),
        ("Bearer realm=x\x01y", "expected ',' after the 'Bearer' challenge"),
        ("Bäsic realm=x", "expected ',' after the 'B' challenge"),
    ],
)
def test_malformed_headers(header: str, message: str) -> None:
    with pytest.raises(AuthError, match=r"^malformed WWW-Authenticate header at offset [0-9]+: ") as info:
        auth.parse_www_authenticate(header)
    assert message in str(info.value)


def test_huge_header_is_handled() -> None:
    header = ", ".join(f'Bearer realm="r{i}", service="s{i}"' for i in range(2000))
    challenges = auth.parse_www_authenticate(header)
    assert len(challenges) == 2000
    assert challenges[-1] == Challenge("bearer", {"realm": "r1999", "service": "s1999"})


# --- credentials ------------------------------------------------------------


def test_credentials_from_auth_config() -> None:
    assert auth.credentials_from_auth_config() is None
    assert auth.credentials_from_auth_config(username="u", password="p") == Credentials("u", "p")
    assert auth.credentials_from_auth_config(auth=b64("user:pa:ss")) == Credentials("user", "pa:ss")
    assert auth.credentials_from_auth_config(auth=b64("user:pass\x00\x00")) == Credentials("user", "pass")
    assert auth.credentials_from_auth_config(auth=b64("user:")) == Credentials("user", "")
    # An explicit username wins over the auth field.
    assert auth.credentials_from_auth_config(username="u", password="p", auth=b64("x:y")) == Credentials("u", "p")
    assert auth.credentials_from_auth_config(identity_token="it") == Credentials(identity_token="it")
    assert auth.credentials_from_auth_config(registry_token="rt") == Credentials(registry_token="rt")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64!", "the 'auth' field is not valid base64 of UTF-8 text"),
        ("dXNlcjpwYXM", "the 'auth' field is not valid base64"),  # missing padding
        ("dXNl\ncjpwYXNz", "the 'auth' field is not valid base64"),
        (base64.b64encode(b"\xff\xfe:x").decode(), "not valid base64 of UTF-8 text"),
        (b64("secretwithoutcolon"), "the decoded 'auth' field is not of the form user:password"),
    ],
)
def test_bad_auth_field(value: str, message: str) -> None:
    with pytest.raises(AuthError) as info:
        auth.credentials_from_auth_config(auth=value)
    assert str(info.value) == message or message in str(info.value)
    assert "secret" not in str(info.value)


def test_credentials_repr_hides_secrets() -> None:
    creds = Credentials("alice", "hunter2", identity_token="idtok", registry_token="")
    assert "hunter2" not in repr(creds)
    assert "idtok" not in repr(creds)
    assert repr(creds) == "Credentials(username='alice', set=['password', 'identity_token'])"


def test_basic_header() -> None:
    assert auth.basic_header(Credentials("aladdin", "open sesame")) == "Basic YWxhZGRpbjpvcGVuIHNlc2FtZQ=="
    assert auth.basic_header(Credentials("ü", "")) == "Basic " + b64("ü:")
    with pytest.raises(AuthError, match="needs a username"):
        auth.basic_header(Credentials(identity_token="x"))
    assert auth.bearer_header("tok") == "Bearer tok"


def test_scope_for() -> None:
    assert auth.scope_for("library/busybox") == "repository:library/busybox:pull"
    assert auth.scope_for("a/b", ("pull", "push")) == "repository:a/b:pull,push"


# --- token requests ---------------------------------------------------------


def hub() -> Challenge:
    return auth.parse_www_authenticate(DOCKER_HUB_CHALLENGE)[0]


def test_anonymous_token_request() -> None:
    request = auth.token_request(hub(), auth.scope_for("library/busybox"))
    assert request.method == "GET"
    assert request.url == ("https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Fbusybox%3Apull")
    assert request.headers == {}
    assert request.body is None
    assert request.key == TokenKey("https://auth.docker.io/token", "registry.docker.io", "repository:library/busybox:pull", "")


def test_basic_token_request_merges_scopes() -> None:
    request = auth.token_request(hub(), ["repository:library/alpine:pull"], Credentials("bob", "pw"))
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.url).query)
    assert query == {
        "service": ["registry.docker.io"],
        "scope": ["repository:library/alpine:pull", "repository:library/busybox:pull"],
        "account": ["bob"],
    }
    assert request.headers == {"Authorization": "Basic " + b64("bob:pw")}
    assert request.key.scope == "repository:library/alpine:pull repository:library/busybox:pull"
    assert request.key.account == auth.credentials_fingerprint(Credentials("bob", "pw"))
    assert request.key.account not in ("", "bob")
    assert "pw" not in repr(request)


def test_token_request_keeps_realm_query() -> None:
    challenge = Challenge("bearer", {"realm": "https://r.example.com/token?x=1"})
    request = auth.token_request(challenge, "repository:a:pull")
    assert request.url == "https://r.example.com/token?x=1&scope=repository%3Aa%3Apull"
    bare = auth.token_request(Challenge("bearer", {"realm": "http://r.example.com/t"}), None)
    assert bare.url == "http://r.example.com/t"
    assert bare.key == TokenKey("http://r.example.com/t", "", "", "")


def test_identity_token_request_is_oauth_post() -> None:
    creds = Credentials("bob", "", identity_token="refresh-me")
    request = auth.token_request(hub(), auth.scope_for("library/busybox"), creds)
    assert request.method == "POST"
    assert request.url == "https://auth.docker.io/token"
    assert request.headers == {"Content-Type": "application/x-www-form-urlencoded"}
    assert request.body is not None
    assert urllib.parse.parse_qs(request.body.decode()) == {
        "grant_type": ["refresh_token"],
        "refresh_token": ["refresh-me"],
        "client_id": ["pycri"],
        "service": ["registry.docker.io"],
        "scope": ["repository:library/busybox:pull"],
    }
    assert "refresh-me" not in repr(request)


def test_user_without_password_gets_no_basic_auth() -> None:
    request = auth.token_request(hub(), None, Credentials("bob", ""))
    assert request.headers == {}
    assert "account" not in request.url


@pytest.mark.parametrize(
    ("challenge", "message"),
    [
        (Challenge("basic", {"realm": "https://x"}), "a token request needs a Bearer challenge, not 'basic'"),
        (Challenge("bearer", {"service": "s"}), "the Bearer challenge has no realm"),
        (Challenge("bearer", {"realm": "ftp://x/token"}), "the Bearer realm 'ftp://x/token' is not an http(s) URL"),
        (Challenge("bearer", {"realm": "/token"}), "the Bearer realm '/token' is not an http(s) URL"),
    ],
)
def test_token_request_errors(challenge: Challenge, message: str) -> None:
    with pytest.raises(AuthError) as info:
        auth.token_request(challenge, "repository:a:pull")
    assert str(info.value) == message


# --- token responses --------------------------------------------------------


def test_parse_token_response() -> None:
    assert auth.parse_token_response(b'{"token": "abc"}') == Token("abc", 60)
    reply = {"token": "t", "access_token": "a", "expires_in": 300, "issued_at": "2024-01-01T00:00:00Z", "refresh_token": "r"}
    assert auth.parse_token_response(json.dumps(reply).encode()) == Token("a", 300, "2024-01-01T00:00:00Z", "r")
    # The spec's minimum lifetime is 60 s; odd expires_in values fall back to it.
    for expires_in in (10, -5, 0, "300", None, True, [1]):
        assert auth.parse_token_response(json.dumps({"token": "t", "expires_in": expires_in}).encode()).expires_in == 60
    assert auth.parse_token_response(b'{"token": "t", "expires_in": 120.7}').expires_in == 120
    assert auth.parse_token_response(b'{"token": "t", "issued_at": 5}').issued_at is None
    assert "abc" not in repr(auth.parse_token_response(b'{"token": "abc"}'))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "token response is not valid JSON"),
        (b"<html>nope</html>", "token response is not valid JSON"),
        (b"\xff\xfe\x00", "token response is not valid JSON"),
        (b'["token"]', "token response is a JSON list, not an object"),
        (b"{}", "token response has no 'token' or 'access_token'"),
        (b'{"token": ""}', "token response has no 'token' or 'access_token'"),
        (b'{"token": 42}', "token response's token is 'int', not a string"),
    ],
)
def test_bad_token_responses(body: bytes, message: str) -> None:
    with pytest.raises(AuthError, match="^" + message.replace("(", r"\(")):
        auth.parse_token_response(body)


# --- token cache ------------------------------------------------------------


def test_token_cache_expiry() -> None:
    cache = TokenCache()
    key = TokenKey("https://auth", "svc", "repository:a:pull")
    assert cache.get(key, 0.0) is None
    token = Token("t", expires_in=60)
    cache.put(key, token, now=1000.0)
    assert cache.get(key, 1000.0) is token
    assert cache.get(key, 1054.9) is token
    assert cache.get(key, 1055.0) is None  # 5 s early
    assert len(cache) == 0
    assert cache.get(TokenKey("https://auth", "svc", "repository:a:pull", "someone"), 1000.0) is None


def test_token_cache_keys_and_invalidate() -> None:
    cache = TokenCache()
    anon = TokenKey("r", "s", "repository:a:pull")
    alice = anon._replace(account="alice")
    cache.put(anon, Token("anon"), 0.0)
    cache.put(alice, Token("alice"), 0.0)
    assert cache.get(anon, 1.0) == Token("anon")
    assert cache.get(alice, 1.0) == Token("alice")
    cache.invalidate(alice)
    cache.invalidate(alice)
    assert cache.get(alice, 1.0) is None
    cache.put(anon, Token("newer", 600), 10.0)
    assert cache.get(anon, 500.0) == Token("newer", 600)


def test_token_cache_is_bounded() -> None:
    cache = TokenCache(max_entries=3)
    keys = [TokenKey("r", "s", f"scope{i}") for i in range(5)]
    cache.put(keys[0], Token("short", 60), 0.0)
    cache.put(keys[1], Token("long", 6000), 0.0)
    cache.put(keys[2], Token("long", 6000), 0.0)
    cache.put(keys[3], Token("long", 6000), 100.0)  # evicts the expired one
    assert len(cache) == 3
    assert cache.get(keys[0], 100.0) is None
    cache.put(keys[4], Token("long", 6000), 100.0)  # evicts the oldest
    assert len(cache) == 3
    assert cache.get(keys[1], 100.0) is None
    assert cache.get(keys[4], 100.0) is not None


# --- docker config.json -----------------------------------------------------


def docker_config(auths: dict[str, dict[str, str]]) -> auth.DockerConfig:
    return auth.DockerConfig.parse(json.dumps({"auths": auths, "credsStore": "desktop"}), "config.json")


@pytest.mark.parametrize(
    "key", ["https://index.docker.io/v1/", "docker.io", "registry-1.docker.io", "index.docker.io", "HTTPS://Docker.IO"]
)
def test_docker_hub_keys(key: str) -> None:
    config = docker_config({key: {"auth": b64("hub:pw")}})
    for host in ("docker.io", "registry-1.docker.io", "index.docker.io", "https://index.docker.io/v1/"):
        assert config.lookup(host) == Credentials("hub", "pw"), host


def test_lookup_hosts_and_ports() -> None:
    config = docker_config(
        {
            "http://localhost:5000/v2/": {"username": "local", "password": "pw"},
            "quay.io": {"auth": b64("q:1")},
            "quay.io/org": {"auth": b64("org:2")},
            "quay.io/org/team/": {"identitytoken": "tok"},
            "ghcr.io": {},
        }
    )
    assert config.lookup("localhost:5000") == Credentials("local", "pw")
    assert config.lookup("localhost") is None
    assert config.lookup("localhost:5001") is None
    assert config.lookup("quay.io") == Credentials("q", "1")
    assert config.lookup("quay.io", "other/x") == Credentials("q", "1")
    assert config.lookup("quay.io", "org/x") == Credentials("org", "2")
    assert config.lookup("quay.io", "org/team/x") == Credentials(identity_token="tok")
    assert config.lookup("quay.io", "orgx/y") == Credentials("q", "1")
    assert config.lookup("ghcr.io") is None  # credential-helper placeholder entry
    assert config.lookup("docker.io") is None


def test_first_of_equivalent_keys_wins() -> None:
    config = docker_config({"https://index.docker.io/v1/": {"auth": b64("a:1")}, "docker.io": {"auth": b64("b:2")}})
    assert config.lookup("docker.io") == Credentials("a", "1")


def test_broken_entry_fails_only_its_lookup() -> None:
    config = docker_config({"bad.example.com": {"auth": "%%%"}, "good.example.com": {"auth": b64("g:1")}})
    assert config.lookup("good.example.com") == Credentials("g", "1")
    with pytest.raises(AuthError, match=r"^config.json: auths\['bad.example.com'\]: the 'auth' field is not valid base64"):
        config.lookup("bad.example.com")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "config.json: not valid JSON"),
        ("[]", "config.json: a docker config must be a JSON object"),
        ('{"auths": []}', "config.json: 'auths' must be an object"),
        ('{"auths": {"x.io": "abc"}}', "config.json: auths['x.io'] must be an object"),
        ('{"auths": {"x.io": {"auth": 5}}}', "config.json: auths['x.io'].auth must be a string"),
        ('{"auths": {"x.io": {"identitytoken": null}}}', "config.json: auths['x.io'].identitytoken must be a string"),
    ],
)
def test_bad_docker_config(text: str, message: str) -> None:
    with pytest.raises(AuthError) as info:
        auth.DockerConfig.parse(text, "config.json")
    assert str(info.value).startswith(message)


def test_docker_config_load(tmp_path: Path) -> None:
    assert auth.DockerConfig.load(tmp_path / "missing.json").lookup("docker.io") is None
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": {"registry.example.com:443": {"auth": b64("u:p")}}}))
    config = auth.DockerConfig.load(path)
    assert config.source == str(path)
    assert config.lookup("registry.example.com:443") == Credentials("u", "p")
    assert auth.DockerConfig.parse("{}").lookup("x.io") is None
    with pytest.raises(AuthError, match="cannot read"):
        auth.DockerConfig.load(tmp_path)


@pytest.mark.parametrize(
    ("key", "normalized"),
    [
        ("https://index.docker.io/v1/", "docker.io"),
        ("registry-1.docker.io", "docker.io"),
        ("http://Example.com:5000/v2/", "example.com:5000"),
        ("quay.io/org/", "quay.io/org"),
        ("docker.io/library", "docker.io/library"),
    ],
)
def test_normalize_host(key: str, normalized: str) -> None:
    assert auth.normalize_host(key) == normalized
