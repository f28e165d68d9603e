"""Docker/OCI image references: parsing and normalisation.

Follows github.com/distribution/reference's ``ParseNormalizedNamed`` (the
parser containerd and CRI-O use): ``busybox`` becomes
``docker.io/library/busybox:latest``, ``index.docker.io`` becomes ``docker.io``,
the first path component is a registry domain when it contains ``.`` or ``:``,
is ``localhost`` or has uppercase letters, and a reference may carry both a tag
and a digest (both are kept).

One deliberate difference: where the Go parser would fall back to reading an
invalid would-be domain (``foo_bar.com/x``) as a path with an *empty* domain,
:func:`parse` rejects the reference instead.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
LOCALHOST = "localhost"
REPOSITORY_MAX_LENGTH = 255

# Expected hex lengths of the digest algorithms go-digest registers.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}

# The grammar of distribution/reference (regexp.go), ASCII only.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN_AND_PORT = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"

_PATH_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
_DOMAIN_RE = re.compile(_DOMAIN_AND_PORT, re.ASCII)
_TAG_RE = re.compile(r"[\w][\w.-]{0,127}", re.ASCII)
_DIGEST_RE = re.compile(r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}", re.ASCII)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}", re.ASCII)
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+", re.ASCII)


class ReferenceError(ValueError):
    """An image reference or digest that cannot be parsed; the message names the input and the reason."""


@dataclass(frozen=True)
class Reference:
    """A normalised image reference: ``domain/path[:tag][@digest]``."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """The fully qualified repository name, ``domain/path``."""
        return f"{self.domain}/{self.path}"

    @property
    def repository(self) -> str:
        """The repository path as used in ``/v2/<repository>/...`` requests."""
        return self.path

    @property
    def familiar_name(self) -> str:
        """The short Docker name: ``busybox`` for ``docker.io/library/busybox``."""
        if self.domain != DEFAULT_DOMAIN:
            return self.name
        if self.path.startswith(OFFICIAL_REPO_PREFIX):
            remainder = self.path[len(OFFICIAL_REPO_PREFIX) :]
            if "/" not in remainder:
                return remainder
        return self.path

    @property
    def familiar(self) -> str:
        """The short Docker form with tag and digest, e.g. ``busybox:latest``."""
        return self.familiar_name + self._suffix()

    @property
    def tagged_string(self) -> str | None:
        """``name:tag``, or None when the reference has no tag."""
        return None if self.tag is None else f"{self.name}:{self.tag}"

    @property
    def digested_string(self) -> str | None:
        """``name@digest``, or None when the reference has no digest."""
        return None if self.digest is None else f"{self.name}@{self.digest}"

    @property
    def manifest_reference(self) -> str:
        """What to ask ``/v2/<repository>/manifests/`` for: the digest if any, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def with_tag(self, tag: str) -> Reference:
        """This reference with ``tag`` (the digest, if any, is kept)."""
        if not _TAG_RE.fullmatch(tag):
            raise ReferenceError(
                f"invalid tag {_shorten(tag)!r} for {self.name}: a tag is 1-128 of [A-Za-z0-9_.-], not starting with . or -"
            )
        return dataclasses.replace(self, tag=tag)

    def with_digest(self, digest: str) -> Reference:
        """This reference with ``digest`` (the tag, if any, is kept)."""
        parse_digest(digest)
        return dataclasses.replace(self, digest=digest)

    def _suffix(self) -> str:
        tag = "" if self.tag is None else f":{self.tag}"
        digest = "" if self.digest is None else f"@{self.digest}"
        return tag + digest

    def __str__(self) -> str:
        return self.name + self._suffix()


def parse_digest(text: str) -> tuple[str, str]:
    """Split ``<algorithm>:<hex>`` after checking it as go-digest does; returns (algorithm, hex)."""
    algorithm, sep, encoded = text.partition(":")
    shown = _shorten(text)
    if not sep or not algorithm or not encoded:
        raise ReferenceError(f"invalid digest {shown!r}: expected <algorithm>:<hex>, e.g. sha256:<64 hex characters>")
    expected = DIGEST_HEX_LENGTHS.get(algorithm)
    if expected is None:
        if _DIGEST_RE.fullmatch(text):
            raise ReferenceError(
                f"invalid digest {shown!r}: unsupported algorithm {_shorten(algorithm, 40)!r} (use sha256, sha384 or sha512)"
            )
        raise ReferenceError(f"invalid digest {shown!r}: expected <algorithm>:<hex>, e.g. sha256:<64 hex characters>")
    if len(encoded) != expected or not _LOWER_HEX_RE.fullmatch(encoded):
        raise ReferenceError(f"invalid digest {shown!r}: {algorithm} needs exactly {expected} lowercase hex characters")
    return algorithm, encoded


def is_digest(text: str) -> bool:
    """Whether ``text`` is a valid ``sha256:``/``sha384:``/``sha512:`` digest."""
    try:
        parse_digest(text)
    except ReferenceError:
        return False
    return True


def is_valid_domain(text: str) -> bool:
    """Whether ``text`` is a registry ``host[:port]`` the reference grammar accepts."""
    return _DOMAIN_RE.fullmatch(text) is not None


def looks_like_image_id(text: str) -> str | None:
    """``sha256:<hex>`` when ``text`` is an image ID (bare 64 hex or ``sha256:<64 hex>``), else None."""
    bare = text.removeprefix("sha256:")
    if _IDENTIFIER_RE.fullmatch(bare):
        return f"sha256:{bare}"
    return None


def _shorten(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters for an error message."""
    return text if len(text) <= limit else text[:limit] + "..."


def _split_domain(name: str) -> tuple[str, str]:
    """distribution/reference's ``splitDockerDomain``: (domain, remainder) with Docker Hub defaults."""
    maybe_domain, slash, maybe_remainder = name.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + name
    if maybe_domain == LEGACY_DEFAULT_DOMAIN:
        domain, remainder = DEFAULT_DOMAIN, maybe_remainder
    elif maybe_domain == LOCALHOST or any(c in maybe_domain for c in ".:") or maybe_domain.lower() != maybe_domain:
        domain, remainder = maybe_domain, maybe_remainder
    else:
        domain, remainder = DEFAULT_DOMAIN, name
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse(text: str, *, default_tag: bool = True) -> Reference:
    """Parse and normalise an image reference like ``ParseNormalizedNamed``.

    With ``default_tag`` (the default) a reference with neither tag nor digest
    gets the tag ``latest``.  Raises :class:`ReferenceError`.
    """

    def fail(reason: str) -> ReferenceError:
        return ReferenceError(f"invalid image reference {_shorten(text)!r}: {reason}")

    if not text:
        raise fail("it is empty")
    if _IDENTIFIER_RE.fullmatch(text):
        raise fail("a 64-character hex string is an image ID, not a repository name")
    rest, at, digest_text = text.partition("@")
    digest: str | None = None
    if at:
        try:
            parse_digest(digest_text)
        except ReferenceError as exc:
            raise fail(str(exc)) from None
        digest = digest_text
    domain, remainder = _split_domain(rest)
    path, colon, tag_text = remainder.partition(":")
    tag: str | None = None
    if colon:
        if not _TAG_RE.fullmatch(tag_text):
            raise fail(f"invalid tag {_shorten(tag_text)!r} (1-128 of [A-Za-z0-9_.-], not starting with . or -)")
        tag = tag_text
    if path.lower() != path:
        raise fail(f"repository name {_shorten(path)!r} must be lowercase")
    if not _PATH_RE.fullmatch(path):
        raise fail(
            f"invalid repository name {_shorten(path)!r} (lowercase [a-z0-9] components joined by . _ __ or -, separated by /)"
        )
    if not _DOMAIN_RE.fullmatch(domain):
        raise fail(f"invalid registry domain {_shorten(domain)!r}")
    if len(path) > REPOSITORY_MAX_LENGTH:
        raise fail(f"repository name is {len(path)} characters long, the limit is {REPOSITORY_MAX_LENGTH}")
    if tag is None and digest is None and default_tag:
        tag = DEFAULT_TAG
    return Reference(domain=domain, path=path, tag=tag, digest=digest)
