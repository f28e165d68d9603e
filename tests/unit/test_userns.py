"""Pod user namespaces: the mappings kubelet sends, checked (pycri.oci.userns), and the infra spec."""

from __future__ import annotations

import pytest

from pycri import errors
from pycri.api import api_pb2 as api
from pycri.host import mounts
from pycri.oci import userns
from pycri.oci.spec import InfraOptions, Namespaces, infra_spec
from pycri.oci.userns import IDMapping, UserNamespace

FIELD = "config.linux.security_context.namespace_options"


def options(mode: api.NamespaceMode.ValueType = api.POD, *uids: tuple[int, int, int], **kw: int) -> api.NamespaceOption:
    given = [api.IDMapping(container_id=c, host_id=h, length=n) for c, h, n in uids]
    found = api.NamespaceOption(userns_options=api.UserNamespace(mode=mode, uids=given, gids=given))
    for name, value in kw.items():
        setattr(found, name, value)
    return found


def test_no_options_and_node_mean_the_host_namespace() -> None:
    assert userns.from_options(api.NamespaceOption(), FIELD) is None
    assert userns.from_options(options(api.NODE), FIELD) is None


def test_pod_mappings() -> None:
    found = userns.from_options(options(api.POD, (0, 65536, 65536)), FIELD)
    assert found == UserNamespace(IDMapping(0, 65536, 65536), IDMapping(0, 65536, 65536))
    assert found.root == (65536, 65536)
    assert found.to_spec() == {
        "uidMappings": [{"containerID": 0, "hostID": 65536, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 65536, "size": 65536}],
    }
    assert found.uid.line() == "0 65536 65536\n"
    assert (found.uid.to_host(0), found.uid.to_host(65535), found.uid.to_host(65536)) == (65536, 131071, None)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        (options(api.NODE, (0, 1000, 10)), "userns_options: mappings are only for mode POD, not NODE"),
        (options(api.CONTAINER), "userns_options.mode: CONTAINER is not supported"),
        (options(api.TARGET), "userns_options.mode: TARGET is not supported"),
        (options(api.POD), "userns_options.uids: exactly one mapping is supported, got 0"),
        (options(api.POD, (0, 1000, 10), (10, 5000, 10)), "userns_options.uids: exactly one mapping is supported, got 2"),
        (options(api.POD, (1, 1000, 10)), "userns_options.uids[0].container_id: container ID 0 is not mapped"),
        (options(api.POD, (0, 1000, 0)), "userns_options.uids[0].length: must be at least 1"),
        (options(api.POD, (0, 0, 65536)), "userns_options.uids[0].host_id: mapping to host ID 0 would give"),
        (options(api.POD, (0, 2**32 - 10, 65536)), "userns_options.uids[0]: host IDs"),
        (
            options(api.POD, (0, 65536, 65536), network=api.NODE, ipc=api.NODE),
            "userns_options: a pod user namespace cannot be combined with the node's network, ipc",
        ),
    ],
)
def test_invalid_options(given: api.NamespaceOption, message: str) -> None:
    with pytest.raises(errors.InvalidArgument) as info:
        userns.from_options(given, FIELD)
    assert info.value.message.startswith(f"{FIELD}.{message}")


def test_infra_spec_of_a_user_namespace_pod() -> None:
    mappings = UserNamespace(IDMapping(0, 65536, 65536), IDMapping(0, 65536, 65536))
    spec = infra_spec(
        InfraOptions(
            infra_command=["/usr/bin/catatonit", "-P"],
            hostname="web",
            namespaces=Namespaces({"network": "/run/netns/x", "user": "/run/pycri/pods/x/userns", "mount": ""}),
            cgroups_path="/pycri/pycri-x",
            id_mappings=mappings.to_spec(),
        )
    )
    assert {"type": "user", "path": "/run/pycri/pods/x/userns"} in spec["linux"]["namespaces"]
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": 65536, "size": 65536}]
    assert spec["linux"]["gidMappings"] == spec["linux"]["uidMappings"]


def test_mountinfo_paths_are_unescaped() -> None:
    assert mounts._unescape(r"/var/lib/a\040b\011c\134d") == "/var/lib/a b\tc\\d"
