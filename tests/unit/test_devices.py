"""pycri.containers.devices: host device nodes from real stats."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from pycri import errors
from pycri.api import api_pb2 as api
from pycri.containers.devices import all_host_devices, host_device, resolve_devices
from pycri.oci.container_spec import HostDevice


def test_dev_null_and_zero() -> None:
    null = host_device("/dev/null")
    assert (null.path, null.type, null.major, null.minor) == ("/dev/null", "c", 1, 3)
    st = os.stat("/dev/null")
    assert null.file_mode == stat.S_IMODE(st.st_mode)
    assert (null.uid, null.gid) == (st.st_uid, st.st_gid)
    zero = host_device("/dev/zero")
    assert (zero.type, zero.major, zero.minor) == ("c", 1, 5)


def test_symlink_followed_to_the_node(tmp_path: Path) -> None:
    link = tmp_path / "mynull"
    link.symlink_to("/dev/null")
    device = host_device(str(link))
    assert (device.type, device.major, device.minor) == ("c", 1, 3)


def test_not_a_device(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(errors.InvalidArgument, match=f"config.devices\\[0\\].host_path: {regular}: not a device node"):
        host_device(str(regular), "config.devices[0].host_path")
    with pytest.raises(errors.InvalidArgument, match="no such device"):
        host_device(str(tmp_path / "missing"))


def test_fifo_is_a_device_when_named(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert host_device(str(fifo)).type == "p"


def dev(container_path: str, host_path: str, permissions: str = "rwm") -> api.Device:
    return api.Device(container_path=container_path, host_path=host_path, permissions=permissions)


def test_resolve_single_devices() -> None:
    result = resolve_devices([dev("/dev/mynull", "/dev/null", "rw"), dev("", "/dev/zero", "")])
    assert [(d.path, path, perms) for d, path, perms in result] == [
        ("/dev/null", "/dev/mynull", "rw"),
        ("/dev/zero", "/dev/zero", "rwm"),
    ]


def test_resolve_normalizes_permissions() -> None:
    [(_, _, perms)] = resolve_devices([dev("/dev/x", "/dev/null", "mwr")])
    assert perms == "rwm"


@pytest.mark.parametrize(
    ("device", "message"),
    [
        (dev("/dev/x", ""), r"config.devices\[1\].host_path: required"),
        (dev("/dev/x", "dev/null"), r"config.devices\[1\].host_path: 'dev/null' must be absolute"),
        (dev("x", "/dev/null"), r"config.devices\[1\].container_path: 'x' must be absolute"),
        (dev("/dev/x", "/dev/null", "rwx"), r"config.devices\[1\].permissions: 'rwx' may only contain r, w and m"),
    ],
)
def test_resolve_errors(device: api.Device, message: str) -> None:
    with pytest.raises(errors.InvalidArgument, match=message):
        resolve_devices([dev("/dev/ok", "/dev/null"), device])


def test_resolve_not_a_device_names_the_field(tmp_path: Path) -> None:
    regular = tmp_path / "file"
    regular.write_text("x")
    with pytest.raises(errors.InvalidArgument, match=r"config.devices\[0\].host_path: .*: not a device node"):
        resolve_devices([dev("/dev/x", str(regular))])


def mknod(path: Path, kind: int, major: int, minor: int) -> None:
    try:
        os.mknod(path, kind | 0o660, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("mknod needs CAP_MKNOD")


@pytest.fixture
def device_dir(tmp_path: Path) -> Path:
    """A fake /dev: nodes, a subdirectory, skipped directories and files, a symlink, a FIFO, a regular file."""
    root = tmp_path / "dev"
    (root / "snd").mkdir(parents=True)
    (root / "pts").mkdir()
    (root / "shm").mkdir()
    mknod(root / "null", stat.S_IFCHR, 1, 3)
    mknod(root / "loop0", stat.S_IFBLK, 7, 0)
    mknod(root / "snd" / "pcm", stat.S_IFCHR, 116, 2)
    mknod(root / "pts" / "0", stat.S_IFCHR, 136, 0)
    mknod(root / "shm" / "x", stat.S_IFCHR, 1, 5)
    mknod(root / "console", stat.S_IFCHR, 5, 1)
    (root / "link").symlink_to("null")
    os.mkfifo(root / "initctl")
    (root / "regular").write_text("x")
    return root


def test_directory_of_devices(device_dir: Path) -> None:
    result = resolve_devices([dev("/dev/mine", str(device_dir), "rw")])
    found = {(d.path, d.type, d.major, d.minor, path, perms) for d, path, perms in result}
    assert found == {
        (str(device_dir / "loop0"), "b", 7, 0, "/dev/mine/loop0", "rw"),
        (str(device_dir / "null"), "c", 1, 3, "/dev/mine/null", "rw"),
        (str(device_dir / "snd" / "pcm"), "c", 116, 2, "/dev/mine/snd/pcm", "rw"),
    }


def test_directory_through_a_symlink(device_dir: Path, tmp_path: Path) -> None:
    link = tmp_path / "devlink"
    link.symlink_to(device_dir)
    result = resolve_devices([dev("/dev/x", str(link))])
    assert sorted(path for _, path, _ in result) == ["/dev/x/loop0", "/dev/x/null", "/dev/x/snd/pcm"]


def test_all_host_devices_on_a_fake_dev(device_dir: Path) -> None:
    devices = all_host_devices(str(device_dir))
    assert {d.path for d in devices} == {str(device_dir / n) for n in ("loop0", "null", "snd/pcm")}
    assert all(isinstance(d, HostDevice) for d in devices)


def test_all_host_devices_real() -> None:
    devices = {d.path: d for d in all_host_devices()}
    assert devices["/dev/null"].major == 1
    assert devices["/dev/null"].minor == 3
    assert not any(p.startswith(("/dev/pts/", "/dev/shm/", "/dev/mqueue/")) for p in devices)
    assert "/dev/console" not in devices
    assert all(d.type in ("c", "b") for d in devices.values())
