"""containers-registries.conf(5) v2: registry mirrors, prefixes, insecure and blocked registries.

The format CRI-O, podman and skopeo read (``/etc/containers/registries.conf``).
:func:`parse`/:func:`load` check it like containers/image's ``sysregistriesv2``
does, and :meth:`RegistriesConf.endpoints` turns an image reference into the
ordered list of places to pull it from: the allowed mirrors of the registry
whose ``prefix`` matches the reference best, then the registry itself, each
with the repository rewritten from the prefix to that endpoint's location.

Not supported: the v1 format (``[registries.search]``), drop-in directories
(``registries.conf.d``) and short-name resolution (``short-name-mode`` and
``[aliases]`` are checked and kept, but not acted upon).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycri.images import reference
from pycri.images.reference import Reference

DOCKER_HUB_DOMAIN = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
PULL_FROM_MIRROR_VALUES = ("all", "digest-only", "tag-only")
SHORT_NAME_MODES = ("disabled", "enforcing", "permissive")

_TOP_LEVEL_KEYS = frozenset(
    {
        "unqualified-search-registries",
        "short-name-mode",
        "registry",
        "aliases",
        "credential-helpers",
        "additional-layer-store-auth-helper",
    }
)
_REGISTRY_KEYS = frozenset({"prefix", "location", "insecure", "blocked", "mirror-by-digest-only", "mirror", "pull-from-mirror"})
_MIRROR_KEYS = frozenset({"location", "insecure", "pull-from-mirror"})


class RegistriesConfError(ValueError):
    """A registries.conf that cannot be used, or a reference it cannot map; the message names file and key."""


class BlockedRegistryError(RegistriesConfError):
    """The reference's registry is ``blocked = true`` in registries.conf."""


@dataclass(frozen=True)
class Mirror:
    """One ``[[registry.mirror]]``: ``pull_from_mirror`` is "" (same as "all"), "digest-only" or "tag-only"."""

    location: str
    insecure: bool = False
    pull_from_mirror: str = ""


@dataclass(frozen=True)
class Registry:
    """One ``[[registry]]`` table after checking; ``prefix`` defaults to ``location``."""

    prefix: str
    location: str
    insecure: bool = False
    blocked: bool = False
    mirror_by_digest_only: bool = False
    mirrors: tuple[Mirror, ...] = ()


@dataclass(frozen=True)
class Endpoint:
    """One place to try: ``host[:port]``, the repository path there, and the rewritten reference."""

    host: str
    repository: str
    insecure: bool
    mirror: bool
    reference: Reference


@dataclass(frozen=True)
class RegistriesConf:
    """A parsed registries.conf; :meth:`endpoints` is what pulling uses."""

    registries: tuple[Registry, ...] = ()
    unqualified_search_registries: tuple[str, ...] = ()
    short_name_mode: str = ""
    aliases: Mapping[str, str] = field(default_factory=dict)
    credential_helpers: tuple[str, ...] = ()
    source: str = "<string>"
    warnings: tuple[str, ...] = ()

    def find(self, ref: Reference) -> Registry | None:
        """The registry whose prefix matches ``ref.name`` best: the longest prefix (on equal lengths the
        alphabetically first, as containers/image sorts them), or None."""
        best: Registry | None = None
        best_length = 0
        for registry in self.registries:
            if match_length(ref.name, registry.prefix) != -1 and len(registry.prefix) > best_length:
                best, best_length = registry, len(registry.prefix)
        return best

    def endpoints(self, ref: Reference) -> list[Endpoint]:
        """Where to pull ``ref`` from, in order: the allowed mirrors, then the primary location.

        Raises :class:`BlockedRegistryError` when the matching registry is blocked
        and :class:`RegistriesConfError` when a location cannot hold the reference.
        """
        registry = self.find(ref)
        if registry is None:
            return [Endpoint(host=api_host(ref.domain), repository=ref.path, insecure=False, mirror=False, reference=ref)]
        if registry.blocked:
            raise BlockedRegistryError(f"registry {registry.prefix!r} is blocked in {self.source}: refusing to pull {ref}")
        digested = ref.digest is not None
        result: list[Endpoint] = []
        for mirror in registry.mirrors:
            if registry.mirror_by_digest_only and not digested:
                continue
            if mirror.pull_from_mirror == "digest-only" and not digested:
                continue
            if mirror.pull_from_mirror == "tag-only" and digested:
                continue
            result.append(self._rewrite(ref, registry, mirror.location, mirror.insecure, mirror=True))
        result.append(self._rewrite(ref, registry, registry.location, registry.insecure, mirror=False))
        return result

    def _rewrite(self, ref: Reference, registry: Registry, location: str, insecure: bool, *, mirror: bool) -> Endpoint:
        """containers/image's ``rewriteReference``: replace the matched prefix of ``ref`` by ``location``."""

        def fail(reason: str) -> RegistriesConfError:
            what = "mirror" if mirror else "location"
            return RegistriesConfError(
                f"{self.source}: cannot pull {ref} from [[registry]] prefix {registry.prefix!r} {what} {location!r}: {reason}"
            )

        text = str(ref)
        length = match_length(text, registry.prefix)
        if length == -1:
            raise fail("the prefix does not match the reference")
        if not location:
            rewritten = ref  # only a "*.example.com" prefix may have no location (checked at parse time)
        else:
            rewritten_text = location + text[length:]
            try:
                rewritten = reference.parse(rewritten_text, default_tag=False)
            except reference.ReferenceError as exc:
                raise fail(str(exc)) from None
            host = location.split("/", 1)[0]
            if rewritten.domain != host and not (
                host == reference.LEGACY_DEFAULT_DOMAIN and rewritten.domain == DOCKER_HUB_DOMAIN
            ):
                raise fail(f"the rewritten reference {rewritten_text!r} does not name a repository on a registry {host!r}")
        return Endpoint(
            host=api_host(rewritten.domain), repository=rewritten.path, insecure=insecure, mirror=mirror, reference=rewritten
        )


def api_host(domain: str) -> str:
    """The host to send ``/v2/`` requests to: Docker Hub's ``docker.io`` is served by ``registry-1.docker.io``."""
    return DOCKER_HUB_API_HOST if domain == DOCKER_HUB_DOMAIN else domain


def match_length(ref: str, prefix: str) -> int:
    """containers/image's ``refMatchingPrefix``: how much of ``ref`` ``prefix`` matches, or -1.

    A plain prefix matches whole components: ``example.com/foo`` matches
    ``example.com/foo``, ``example.com/foo/bar``, ``example.com/foo:tag`` and
    ``example.com/foo@digest`` but not ``example.com/foobar``.  A wildcard
    prefix ``*.example.com`` matches any subdomain of example.com (not
    example.com itself) in the domain part of ``ref``.
    """
    if prefix.startswith("*."):
        suffix = prefix[1:]
        index = ref.find(suffix)
        if index == -1 or "/" in ref[:index]:
            return -1
        end = index + len(suffix)
        return end if end == len(ref) or ref[end] in ":/@" else -1
    if ref == prefix:
        return len(prefix)
    if len(ref) > len(prefix) and ref.startswith(prefix) and ref[len(prefix)] in ":/@":
        return len(prefix)
    return -1


def load(path: str | Path) -> RegistriesConf:
    """Read a registries.conf; a missing file is an empty configuration."""
    source = str(path)
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return RegistriesConf(source=source)
    except OSError as exc:
        raise RegistriesConfError(f"{source}: cannot read: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistriesConfError(f"{source}: not UTF-8 text: {exc}") from None
    return parse(text, source)


def parse(text: str, source: str = "<string>") -> RegistriesConf:
    """Parse and check registries.conf v2 text; ``source`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegistriesConfError(f"{source}: invalid TOML: {exc}") from None
    return _Checker(source).config(data)


_KIND_NAMES: dict[type, str] = {
    bool: "a boolean",
    str: "a string",
    int: "an integer",
    float: "a float",
    list: "an array",
    dict: "a table",
}


def _type_name(value: object) -> str:
    return _KIND_NAMES.get(type(value), f"a {type(value).__name__}")


class _Checker:
    """Checks the decoded TOML and builds a :class:`RegistriesConf`; errors name the source and key."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []

    def error(self, where: str, message: str) -> RegistriesConfError:
        return RegistriesConfError(f"{self.source}: {where}{': ' if where else ''}{message}")

    def get(self, table: Mapping[str, Any], key: str, kind: type, where: str, default: Any) -> Any:
        value = table.get(key, default)
        if not isinstance(value, kind):
            raise self.error(where, f"key {key!r} must be {_KIND_NAMES[kind]}, not {_type_name(value)}")
        return value

    def strings(self, table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
        values = self.get(table, key, list, where, [])
        for i, value in enumerate(values):
            if not isinstance(value, str):
                raise self.error(where, f"key {key!r}: entry {i + 1} must be a string, not {_type_name(value)}")
        return tuple(values)

    def tables(self, table: Mapping[str, Any], key: str, where: str, syntax: str) -> list[dict[str, Any]]:
        values = table.get(key, [])
        if not isinstance(values, list) or not all(isinstance(v, dict) for v in values):
            raise self.error(where, f"key {key!r} must be an array of tables ({syntax})")
        return values

    def unknown(self, table: Mapping[str, Any], known: frozenset[str], where: str) -> None:
        for key in table:
            if key not in known:
                self.warnings.append(f"{self.source}: {where or 'top level'}: unknown key {key!r} ignored")

    def location(self, value: str, where: str, key: str) -> str:
        """containers/image's ``parseLocation``: no URL scheme, trailing slashes dropped."""
        if value.startswith(("http://", "https://")):
            raise self.error(where, f"{key} {value!r}: URI schemes are not supported (write host[:port][/path])")
        return value.rstrip("/")

    def config(self, data: Mapping[str, Any]) -> RegistriesConf:
        if "registries" in data:
            raise self.error("", "the v1 format ([registries.search] etc.) is not supported; use v2 [[registry]] tables")
        self.unknown(data, _TOP_LEVEL_KEYS, "")
        search = []
        for entry in self.strings(data, "unqualified-search-registries", ""):
            host = self.location(entry, "", "unqualified-search-registries entry")
            if not reference.is_valid_domain(host):
                raise self.error("", f"key 'unqualified-search-registries': {entry!r} is not a registry host[:port]")
            search.append(host)
        mode = self.get(data, "short-name-mode", str, "", "")
        if mode and mode not in SHORT_NAME_MODES:
            raise self.error("", f"key 'short-name-mode': {mode!r} is not one of {', '.join(SHORT_NAME_MODES)}")
        aliases = self.get(data, "aliases", dict, "", {})
        for alias, target in aliases.items():
            if not isinstance(target, str):
                raise self.error("[aliases]", f"key {alias!r} must be a string, not {_type_name(target)}")
        helpers = self.strings(data, "credential-helpers", "")
        self.get(data, "additional-layer-store-auth-helper", str, "", "")
        registries = [self.registry(i, table) for i, table in enumerate(self.tables(data, "registry", "", "[[registry]]"), 1)]
        self.check_conflicts(registries)
        # Like containers/image: the first registry of each prefix wins, sorted by prefix.
        unique: dict[str, Registry] = {}
        for registry in registries:
            unique.setdefault(registry.prefix, registry)
        return RegistriesConf(
            registries=tuple(unique[prefix] for prefix in sorted(unique)),
            unqualified_search_registries=tuple(search),
            short_name_mode=mode,
            aliases=dict(aliases),
            credential_helpers=helpers,
            source=self.source,
            warnings=tuple(self.warnings),
        )

    def registry(self, number: int, table: Mapping[str, Any]) -> Registry:
        where = f"[[registry]] #{number}"
        prefix = self.get(table, "prefix", str, where, "")
        location = self.get(table, "location", str, where, "")
        if location or prefix:
            where += f" ({'prefix ' + repr(prefix) if prefix else 'location ' + repr(location)})"
        self.unknown(table, _REGISTRY_KEYS, where)
        insecure = self.get(table, "insecure", bool, where, False)
        blocked = self.get(table, "blocked", bool, where, False)
        by_digest = self.get(table, "mirror-by-digest-only", bool, where, False)
        if self.get(table, "pull-from-mirror", str, where, ""):
            raise self.error(where, "'pull-from-mirror' belongs in [[registry.mirror]], not in [[registry]]")
        location = self.location(location, where, "location")
        if not prefix:
            if not location:
                raise self.error(where, "both 'location' and 'prefix' are unset")
            prefix = location
        else:
            prefix = self.location(prefix, where, "prefix")
            if not prefix.startswith("*.") and not location:
                raise self.error(where, "'location' is unset and 'prefix' is not of the form *.example.com")
        mirrors = []
        for j, mirror_table in enumerate(self.tables(table, "mirror", where, "[[registry.mirror]]"), 1):
            mirror_where = f"{where} [[registry.mirror]] #{j}"
            self.unknown(mirror_table, _MIRROR_KEYS, mirror_where)
            mirror_location = self.location(self.get(mirror_table, "location", str, mirror_where, ""), mirror_where, "location")
            if not mirror_location:
                raise self.error(mirror_where, "'location' is unset")
            pull_from = self.get(mirror_table, "pull-from-mirror", str, mirror_where, "")
            if pull_from and pull_from not in PULL_FROM_MIRROR_VALUES:
                raise self.error(
                    mirror_where, f"key 'pull-from-mirror': {pull_from!r} is not one of {', '.join(PULL_FROM_MIRROR_VALUES)}"
                )
            if pull_from and by_digest:
                raise self.error(
                    mirror_where, "'pull-from-mirror' cannot be set when the registry has mirror-by-digest-only = true"
                )
            mirror_insecure = self.get(mirror_table, "insecure", bool, mirror_where, False)
            mirrors.append(Mirror(location=mirror_location, insecure=mirror_insecure, pull_from_mirror=pull_from))
        return Registry(
            prefix=prefix,
            location=location,
            insecure=insecure,
            blocked=blocked,
            mirror_by_digest_only=by_digest,
            mirrors=tuple(mirrors),
        )

    def check_conflicts(self, registries: list[Registry]) -> None:
        """Entries for the same location must agree on ``insecure`` and ``blocked``."""
        seen: dict[str, Registry] = {}
        for registry in registries:
            key = registry.location or registry.prefix
            other = seen.setdefault(key, registry)
            for setting in ("insecure", "blocked"):
                if getattr(registry, setting) != getattr(other, setting):
                    raise self.error("", f"registry {key!r} is defined multiple times with conflicting {setting!r} settings")
