"""pycri.containers.users: the container's uid, gid and groups from the request and the image's files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from pycri import errors
from pycri.api import api_pb2 as api
from pycri.containers.users import effective_user, parse_group, parse_passwd, read_rootfs_file, resolve_user
from pycri.oci.container_spec import ResolvedUser

SC = "config.linux.security_context"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1000:App:/home/app:/bin/sh
web:x:33:33::/var/www:/bin/false
broken line
bad:x:notanumber:1::/:/bin/sh
+nis
"""
GROUP = """\
root:x:0:
daemon:x:1:app
app:x:1000:app
staff:x:50:app,web
wheel:x:10:root
audio:x:29: app
video:x:44:web
group-defined-in-image:x:50000:app
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


def security(**kwargs: Any) -> api.LinuxContainerSecurityContext:
    sc = api.LinuxContainerSecurityContext()
    for name in ("run_as_user", "run_as_group"):
        if name in kwargs:
            getattr(sc, name).value = kwargs.pop(name)
    for name, value in kwargs.items():
        if isinstance(value, list):
            getattr(sc, name).extend(value)
        else:
            setattr(sc, name, value)
    return sc


def resolve(rootfs: Path, image_user: str = "", **kwargs: Any) -> ResolvedUser:
    return resolve_user(str(rootfs), image_user, security(**kwargs))


def invalid(rootfs: Path, image_user: str = "", **kwargs: Any) -> str:
    with pytest.raises(errors.InvalidArgument) as info:
        resolve(rootfs, image_user, **kwargs)
    return info.value.message


# -- parsing -------------------------------------------------------------------------------------------------


def test_parse_passwd_skips_junk() -> None:
    names = [(e.name, e.uid, e.gid) for e in parse_passwd(PASSWD)]
    assert names == [("root", 0, 0), ("daemon", 1, 1), ("app", 1000, 1000), ("web", 33, 33)]


def test_parse_group_members() -> None:
    groups = {g.name: g for g in parse_group(GROUP)}
    assert groups["staff"].members == ("app", "web")
    assert groups["audio"].members == ("app",)
    assert groups["root"].members == ()


# -- the user ---------------------------------------------------------------------------------------------------


def test_default_is_root(rootfs: Path) -> None:
    assert resolve(rootfs) == ResolvedUser(uid=0, gid=0, additional_gids=[10], username="root")


def test_default_root_without_passwd(tmp_path: Path) -> None:
    assert resolve(tmp_path) == ResolvedUser(uid=0, gid=0, additional_gids=[], username="")


def test_run_as_user_known(rootfs: Path) -> None:
    user = resolve(rootfs, run_as_user=1000)
    assert (user.uid, user.gid, user.username) == (1000, 1000, "app")
    assert user.additional_gids == [1, 29, 50, 50000]


def test_run_as_user_unknown_uid_is_fine(rootfs: Path) -> None:
    assert resolve(rootfs, run_as_user=4321) == ResolvedUser(uid=4321, gid=0, additional_gids=[], username="")


def test_run_as_user_wins_over_username_and_image(rootfs: Path) -> None:
    user = resolve(rootfs, "web", run_as_user=1, run_as_username="app")
    assert (user.uid, user.gid) == (1, 1)


def test_run_as_user_ignores_image_group(rootfs: Path) -> None:
    user = resolve(rootfs, "app:staff", run_as_user=33)
    assert (user.uid, user.gid) == (33, 33)


def test_run_as_username(rootfs: Path) -> None:
    user = resolve(rootfs, "web", run_as_username="app")
    assert (user.uid, user.gid, user.username) == (1000, 1000, "app")


def test_run_as_username_unknown(rootfs: Path) -> None:
    assert invalid(rootfs, run_as_username="ghost") == f"{SC}.run_as_username: user ghost not found in the image"


def test_run_as_username_numeric_is_a_uid(rootfs: Path) -> None:
    assert resolve(rootfs, run_as_username="33").uid == 33
    assert resolve(rootfs, run_as_username="777") == ResolvedUser(uid=777, gid=0)


def test_run_as_group(rootfs: Path) -> None:
    user = resolve(rootfs, run_as_user=1000, run_as_group=3000)
    assert (user.uid, user.gid) == (1000, 3000)
    assert user.additional_gids == [1, 29, 50, 50000]
    user = resolve(rootfs, "app", run_as_username="web", run_as_group=5)
    assert (user.uid, user.gid) == (33, 5)


def test_run_as_group_without_user(rootfs: Path) -> None:
    message = invalid(rootfs, "app", run_as_group=5)
    assert message == f"{SC}.run_as_group: set without run_as_user or run_as_username"


@pytest.mark.parametrize(
    ("name", "value"),
    [("run_as_user", -1), ("run_as_user", 2**31), ("run_as_group", -5)],
)
def test_ids_out_of_range(rootfs: Path, name: str, value: int) -> None:
    kwargs: dict[str, Any] = {"run_as_user": 1, name: value}
    assert invalid(rootfs, **kwargs).startswith(f"{SC}.{name}: ")


@pytest.mark.parametrize(
    ("image_user", "uid", "gid", "name"),
    [
        ("app", 1000, 1000, "app"),
        ("1000", 1000, 1000, "app"),
        ("4321", 4321, 0, ""),
        ("app:staff", 1000, 50, "app"),
        ("app:777", 1000, 777, "app"),
        ("33:staff", 33, 50, "web"),
        ("4321:4321", 4321, 4321, ""),
        ("1000:", 1000, 0, "app"),
    ],
)
def test_image_user_forms(rootfs: Path, image_user: str, uid: int, gid: int, name: str) -> None:
    user = resolve(rootfs, image_user)
    assert (user.uid, user.gid, user.username) == (uid, gid, name)


@pytest.mark.parametrize(
    ("image_user", "message"),
    [
        ("ghost", "user 'ghost' not found in the image's /etc/passwd"),
        ("app:nogroup", "group 'nogroup' not found in the image's /etc/group"),
        ("a:b:c", "must be user, uid, user:group or uid:gid"),
        (":5", "must be user, uid, user:group or uid:gid"),
        ("99999999999", "uid out of range"),
        ("1:99999999999", "gid out of range"),
    ],
)
def test_image_user_errors(rootfs: Path, image_user: str, message: str) -> None:
    text = invalid(rootfs, image_user)
    assert text.startswith(f"image config User {image_user!r}: ")
    assert message in text


# -- supplementary groups ---------------------------------------------------------------------------------------------


def test_merge_policy_is_default(rootfs: Path) -> None:
    user = resolve(rootfs, "web", supplemental_groups=[1234, 5678, 1234])
    assert user.gid == 33
    assert user.additional_gids == [44, 50, 1234, 5678]


def test_merge_skips_group_named_like_the_user(rootfs: Path) -> None:
    # app is listed in the group "app" (its primary); containerd leaves that one out.
    assert 1000 not in resolve(rootfs, "app", run_as_group=1, run_as_user=1000).additional_gids


def test_strict_policy_only_request_groups(rootfs: Path) -> None:
    user = resolve(rootfs, run_as_user=1000, supplemental_groups=[1234], supplemental_groups_policy=api.Strict)
    assert (user.uid, user.gid) == (1000, 1000)
    assert user.additional_gids == [1234]


def test_additional_gids_exclude_primary(rootfs: Path) -> None:
    user = resolve(rootfs, run_as_user=1000, supplemental_groups=[1000, 7])
    assert 1000 not in user.additional_gids
    assert 7 in user.additional_gids


def test_supplemental_group_out_of_range(rootfs: Path) -> None:
    message = invalid(rootfs, run_as_user=1, supplemental_groups=[5, -1])
    assert message.startswith(f"{SC}.supplemental_groups[1]: ")


def test_unknown_policy(rootfs: Path) -> None:
    assert "supplemental_groups_policy" in invalid(rootfs, supplemental_groups_policy=7)


def test_effective_user_reports_primary_group() -> None:
    # As critest expects of ContainerStatus.user: the primary gid is among the groups, like `id -G`.
    assert effective_user(ResolvedUser(uid=1000, gid=1000, additional_gids=[50000, 1234])) == (1000, 1000, [1000, 1234, 50000])
    assert effective_user(ResolvedUser(uid=0, gid=0)) == (0, 0, [0])


def test_critest_merge_and_strict_cases(tmp_path: Path) -> None:
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\ndefault-user:x:1000:1000::/home:/bin/sh\n")
    (root / "etc" / "group").write_text("root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n")
    merged = resolve(root, run_as_user=1000, supplemental_groups=[1234])
    assert effective_user(merged) == (1000, 1000, [1000, 1234, 50000])
    strict = resolve(root, run_as_user=1000, supplemental_groups=[1234], supplemental_groups_policy=api.Strict)
    assert effective_user(strict) == (1000, 1000, [1000, 1234])


# -- reading inside the rootfs ------------------------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A passwd and group outside the rootfs that must never be read."""
    evil = tmp_path / "outside"
    evil.mkdir()
    (evil / "passwd").write_text("evil:x:666:666::/:/bin/sh\n")
    (evil / "group").write_text("evil:x:666:evil\n")
    return evil


def test_absolute_symlink_to_outside_is_not_followed_out(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").symlink_to(outside / "passwd")
    assert read_rootfs_file(str(root), "etc/passwd") is None
    assert invalid(root, run_as_username="evil") == f"{SC}.run_as_username: user evil not found in the image"
    assert resolve(root, run_as_user=666) == ResolvedUser(uid=666, gid=0)


def test_relative_symlink_escaping_stops_at_root(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    relative = os.path.relpath(outside / "passwd", root / "etc")  # ../../outside/passwd
    (root / "etc" / "passwd").symlink_to(relative)
    assert read_rootfs_file(str(root), "etc/passwd") is None
    assert "not found" in invalid(root, "evil")
    # Clamped at the root, as under chroot: ../../outside/passwd is <rootfs>/outside/passwd.
    (root / "outside").mkdir()
    (root / "outside" / "passwd").write_text("inside:x:5:5::/:/bin/sh\n")
    assert resolve(root, "inside").uid == 5


def test_symlinked_etc_directory_resolves_inside(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    (root / "etc").symlink_to(outside)  # absolute: means <rootfs><outside>
    assert read_rootfs_file(str(root), "etc/passwd") is None
    inner = root / str(outside).lstrip("/")
    inner.mkdir(parents=True)
    (inner / "passwd").write_text("mirror:x:7:7::/:/bin/sh\n")
    assert resolve(root, "mirror").uid == 7


def test_symlinks_inside_rootfs_are_followed(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "usr" / "lib").mkdir(parents=True)
    (root / "usr" / "lib" / "passwd").write_text("lib:x:9:9::/:/bin/sh\n")
    (root / "etc" / "passwd").symlink_to("/usr/lib/passwd")
    (root / "etc" / "group").symlink_to("../usr/lib/passwd")  # a relative link works too
    assert resolve(root, "lib").uid == 9
    assert read_rootfs_file(str(root), "etc/group") == "lib:x:9:9::/:/bin/sh\n"


def test_symlink_loop(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").symlink_to("passwd2")
    (root / "etc" / "passwd2").symlink_to("passwd")
    with pytest.raises(errors.InvalidArgument, match="too many levels of symbolic links"):
        read_rootfs_file(str(root), "etc/passwd")


def test_not_a_regular_file(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc" / "passwd").mkdir(parents=True)
    with pytest.raises(errors.InvalidArgument, match="not a regular file"):
        read_rootfs_file(str(root), "etc/passwd")
    os.mkfifo(root / "etc" / "group")
    with pytest.raises(errors.InvalidArgument, match="not a regular file"):
        read_rootfs_file(str(root), "etc/group")


def test_file_too_large(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("x" * 100)
    with pytest.raises(errors.InvalidArgument, match="larger than 10 bytes"):
        read_rootfs_file(str(root), "etc/passwd", limit=10)


def test_missing_and_non_directory_components(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    assert read_rootfs_file(str(root), "etc/passwd") is None
    (root / "etc").write_text("a file, not a directory")
    assert read_rootfs_file(str(root), "etc/passwd") is None


def test_dot_dot_in_the_path_stays_inside(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("ok:x:1:1::/:/bin/sh\n")
    assert read_rootfs_file(str(root), "../../../etc/passwd") == "ok:x:1:1::/:/bin/sh\n"


def test_dot_dot_inside_link_targets(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "real").write_text("real:x:3:3::/:/bin/sh\n")
    (root / "etc" / "passwd").symlink_to("/a/b/../../a/b/../real")
    assert resolve(root, "real").uid == 3


def test_no_descriptor_leaks(tmp_path: Path, outside: Path) -> None:
    root = tmp_path / "rootfs"
    deep = root / "d" / "d" / "d" / "d"
    deep.mkdir(parents=True)
    (deep / "passwd").write_text("deep:x:4:4::/:/bin/sh\n")
    (root / "etc").mkdir()
    (root / "etc" / "passwd").symlink_to("../d/d/d/d/../d/passwd")
    (root / "etc" / "group").symlink_to(outside / "group")
    (root / "etc" / "loop").symlink_to("loop")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        assert read_rootfs_file(str(root), "etc/passwd") == "deep:x:4:4::/:/bin/sh\n"
        assert read_rootfs_file(str(root), "etc/group") is None
        assert read_rootfs_file(str(root), "etc/missing/x") is None
        with pytest.raises(errors.InvalidArgument):
            read_rootfs_file(str(root), "etc/loop")
        with pytest.raises(errors.InvalidArgument):
            read_rootfs_file(str(root), "d")
    assert len(os.listdir("/proc/self/fd")) == before
