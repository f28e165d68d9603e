"""Image volumes (``Mount.image``) on the real daemon, with runc and crun.

The module pulls a busybox image to run and a two-layer "data" image to mount: its layers are
overlaid read-only under the container's directory and bind-mounted where kubelet asks, whole
or from ``image_sub_path`` resolved inside the image.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pycri.api import api_pb2 as api
from pycri.client import InvalidArgumentError, NotFoundError
from tests.integration.harness import Harness
from tests.support import busybox
from tests.support.busybox import busybox_image
from tests.support.images import Dir, File, Image, Layer, Symlink

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root"),
    pytest.mark.skipif(not busybox.available(), reason=f"{busybox.BUSYBOX} (busybox-static) is not installed"),
]

DATA = Image(
    [
        Layer([Dir("models"), File("models/a.txt", b"layer one\n"), File("models/b.txt", b"replaced\n")]),
        Layer(
            [
                File("models/b.txt", b"layer two\n"),
                Dir("models/deep"),
                File("models/deep/c.txt", b"deep\n", mode=0o600, uid=1000, gid=1000),
                Symlink("models/here", "/models/deep"),  # absolute: resolved inside the image
                Symlink("escape", "/etc"),  # the host's /etc must never be reached through it
            ]
        ),
    ]
)
IMAGES = {"plain": busybox_image(), "data": DATA}


def volume(h: Harness, path: str, sub: str = "", *, readonly: bool = True, image: str = "data") -> api.Mount:
    return api.Mount(
        container_path=path,
        image=api.ImageSpec(image=h.refs[image], user_specified_image=h.refs[image]),
        readonly=readonly,
        image_sub_path=sub,
    )


def data_id(h: Harness) -> str:
    return h.client.image_status(api.ImageStatusRequest(image=api.ImageSpec(image=h.refs["data"]))).image.id


@pytest.mark.parametrize("handler", ["runc", "crun"])
def test_image_volume(h: Harness, handler: str) -> None:
    pod = h.pod(f"imgvol-{handler}", handler=handler)
    mounts = [volume(h, "/mnt/data"), volume(h, "/mnt/deep", "models/here"), volume(h, "/mnt/bin", "bin", image="plain")]
    cid = h.container(pod, "reader", mounts=mounts)
    assert h.sh(cid, "cat /mnt/data/models/a.txt /mnt/data/models/b.txt") == "layer one\nlayer two\n"
    assert h.sh(cid, "cat /mnt/deep/c.txt; stat -c '%u:%g %a' /mnt/deep/c.txt") == "deep\n1000:1000 600\n"
    assert "Read-only file system" in h.fails(cid, "touch /mnt/data/x")
    assert "Read-only file system" in h.fails(cid, "touch /mnt/deep/x")
    assert h.sh(cid, "/mnt/bin/echo runs from the volume").strip() == "runs from the volume"  # not noexec

    status = h.status(cid)
    by_path = {m.container_path: m for m in status.mounts}
    assert by_path["/mnt/data"].image.image_ref == data_id(h)
    assert by_path["/mnt/deep"].image_sub_path == "models/here"
    config_mounts = h.client.container_status(api.ContainerStatusRequest(container_id=cid)).status.mounts
    assert [m.container_path for m in config_mounts] == ["/mnt/data", "/mnt/deep", "/mnt/bin"]


def test_image_sub_path_stays_in_the_image(h: Harness) -> None:
    pod = h.pod("imgvol-escape")
    # "escape" -> /etc, resolved inside the image, which has no /etc: the host's is never reached.
    for sub in ("escape", "escape/passwd", "models/../../escape"):
        with pytest.raises(InvalidArgumentError, match=r"image_sub_path: '.*' (does not exist in image|must be a relative)"):
            h.container(pod, "escape", mounts=[volume(h, "/mnt/etc", sub)])
    assert h.list() == set()


def test_image_volume_errors(h: Harness) -> None:
    pod = h.pod("imgvol-errors")
    with pytest.raises(InvalidArgumentError, match=r"config\.mounts\[0\]\.readonly: an image volume is always read-only"):
        h.container(pod, "rw", mounts=[volume(h, "/mnt/x", readonly=False)])
    with pytest.raises(InvalidArgumentError, match=r"config\.mounts\[0\]\.image_sub_path: '\.\./x' must be a relative path"):
        h.container(pod, "dotdot", mounts=[volume(h, "/mnt/x", "../x")])
    with pytest.raises(InvalidArgumentError, match=r"image_sub_path: 'missing' does not exist in image"):
        h.container(pod, "missing", mounts=[volume(h, "/mnt/x", "missing")])
    unknown = api.Mount(container_path="/mnt/x", readonly=True, image=api.ImageSpec(image="127.0.0.1:1/none:1"))
    with pytest.raises(
        NotFoundError, match=r"config\.mounts\[0\]\.image: image '127\.0\.0\.1:1/none:1' not found; pull it first"
    ):
        h.container(pod, "unknown", mounts=[unknown])
    assert h.list() == set()


def test_removing_the_image_keeps_the_mounted_volume(h: Harness) -> None:
    pod = h.pod("imgvol-rmi")
    cid = h.container(pod, "reader", mounts=[volume(h, "/mnt/data")])
    image_id = data_id(h)
    h.client.remove_image(api.RemoveImageRequest(image=api.ImageSpec(image=image_id)))
    try:
        assert h.sh(cid, "cat /mnt/data/models/a.txt") == "layer one\n"  # its layers are still in use
        h.remove(cid)
    finally:
        h.client.pull_image(api.PullImageRequest(image=api.ImageSpec(image=h.refs["data"])))
    assert data_id(h) == image_id


def test_image_volume_in_a_user_namespace_pod(h: Harness) -> None:
    ids = [api.IDMapping(container_id=0, host_id=4_000_000, length=65536)]
    pod = h.pod("imgvol-userns", userns=api.UserNamespace(mode=api.POD, uids=ids, gids=ids))
    security = api.LinuxContainerSecurityContext()
    security.namespace_options.userns_options.CopyFrom(api.UserNamespace(mode=api.POD, uids=ids, gids=ids))
    cid = h.container(pod, "reader", mounts=[volume(h, "/mnt/data")], security=security)
    assert h.sh(cid, "stat -c '%u:%g' /mnt/data/models/a.txt /mnt/data/models/deep/c.txt").split() == ["0:0", "1000:1000"]
    layers = Path(h.info(cid)["runtimeSpec"]["root"]["path"]).parent / "volumes"
    assert sorted(p.name for p in layers.iterdir()) == ["0", "0-lower"]
