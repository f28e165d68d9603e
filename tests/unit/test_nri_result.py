"""Merging plugins' answers (pycri.nri.result) as containerd/nri's result.go does, without sockets."""

from __future__ import annotations

import pytest

from pycri.nri import api_pb2 as nri
from pycri.nri.owners import ConflictError, Owners
from pycri.nri.result import Result


def creating(**container: object) -> Result:
    ctr = nri.Container(id="c1", **container)  # type: ignore[arg-type]
    return Result(create=nri.CreateContainerRequest(pod=nri.PodSandbox(id="p1"), container=ctr))


def reply(adjust: nri.ContainerAdjustment, *updates: nri.ContainerUpdate) -> nri.CreateContainerResponse:
    return nri.CreateContainerResponse(adjust=adjust, update=updates)


def test_annotations_add_remove_and_conflict() -> None:
    result = creating(annotations={"old": "1", "keep": "2"})
    result.apply_create(reply(nri.ContainerAdjustment(annotations={"new": "a", "-old": ""})), "10-a")
    # "-k" and "k" from the same plugin: replace the entry
    result.apply_create(reply(nri.ContainerAdjustment(annotations={"-keep": "", "keep": "3"})), "20-b")
    assert dict(result.create_container.annotations) == {"old": "1", "keep": "3", "new": "a"}
    assert dict(result.adjust.annotations) == {"new": "a", "-old": "", "-keep": "", "keep": "3"}
    with pytest.raises(ConflictError, match='plugins "30-c" and "10-a" both tried to set Annotations new'):
        result.apply_create(reply(nri.ContainerAdjustment(annotations={"new": "b"})), "30-c")


def test_mounts_replace_remove_and_conflict() -> None:
    result = creating(mounts=[nri.Mount(destination="/a", source="/x"), nri.Mount(destination="/b", source="/y")])
    result.apply_create(
        reply(nri.ContainerAdjustment(mounts=[nri.Mount(destination="/a", source="/z"), nri.Mount(destination="-/b")])), "10-a"
    )
    assert [(m.destination, m.source) for m in result.create_container.mounts] == [("/a", "/z")]
    assert [m.destination for m in result.adjust.mounts] == ["/a", "-/b"]
    with pytest.raises(ConflictError, match="Mounts /a"):
        result.apply_create(reply(nri.ContainerAdjustment(mounts=[nri.Mount(destination="/a", source="/w")])), "20-b")


def test_a_later_plugin_removing_an_earlier_mount_drops_it_from_the_result() -> None:
    result = creating()
    result.apply_create(reply(nri.ContainerAdjustment(mounts=[nri.Mount(destination="/m", source="/x")])), "10-a")
    result.apply_create(reply(nri.ContainerAdjustment(mounts=[nri.Mount(destination="-/m")])), "20-b")
    assert [m.destination for m in result.adjust.mounts] == ["-/m"]
    assert result.owners.owner("c1", nri.Mounts, "/m") == "-20-b"
    # the remover may set it again; another plugin may not
    with pytest.raises(ConflictError, match='"30-c" and "20-b"'):
        result.apply_create(reply(nri.ContainerAdjustment(mounts=[nri.Mount(destination="/m")])), "30-c")


def test_env_override_and_removal_as_later_plugins_see_it() -> None:
    result = creating(env=["A=1", "B=2", "C"])
    adjust = nri.ContainerAdjustment(env=[nri.KeyValue(key="A", value="9"), nri.KeyValue(key="-C")])
    result.apply_create(reply(adjust), "10-a")
    assert list(result.create_container.env) == ["B=2", "A=9"]
    assert [(e.key, e.value) for e in result.adjust.env] == [("A", "9")]
    with pytest.raises(ConflictError, match='plugins "20-b" and "10-a" both tried to set Env A'):
        result.apply_create(reply(nri.ContainerAdjustment(env=[nri.KeyValue(key="A", value="0")])), "20-b")


def test_args_conflict_unless_replaced_with_a_leading_empty_string() -> None:
    result = creating(args=["/bin/app"])
    result.apply_create(reply(nri.ContainerAdjustment(args=["/bin/wrapped", "/bin/app"])), "10-a")
    with pytest.raises(ConflictError, match="Args"):
        result.apply_create(reply(nri.ContainerAdjustment(args=["/bin/other"])), "20-b")
    result.apply_create(reply(nri.ContainerAdjustment(args=["", "/bin/forced"])), "30-c")
    assert list(result.adjust.args) == list(result.create_container.args) == ["/bin/forced"]


def test_hooks_accumulate_from_every_plugin() -> None:
    result = creating()
    for plugin in ("10-a", "20-b"):
        result.apply_create(reply(nri.ContainerAdjustment(hooks=nri.Hooks(prestart=[nri.Hook(path=f"/{plugin}")]))), plugin)
    assert [h.path for h in result.adjust.hooks.prestart] == ["/10-a", "/20-b"]
    assert [h.path for h in result.create_container.hooks.prestart] == ["/10-a", "/20-b"]
    assert result.owners.owner("c1", nri.OciHooks) == "10-a,20-b"


def test_resources_merge_and_conflict_per_field() -> None:
    result = creating()
    first = nri.ContainerAdjustment()
    first.linux.resources.memory.limit.value = 0  # present, even though zero
    first.linux.resources.cpu.cpus = "0-1"
    first.linux.resources.unified["memory.high"] = "1G"
    first.linux.resources.hugepage_limits.add(page_size="2MB", limit=1 << 21)
    first.linux.resources.pids.limit = 100
    result.apply_create(reply(first), "10-a")
    second = nri.ContainerAdjustment()
    second.linux.resources.cpu.shares.value = 1024
    second.linux.resources.unified["cpu.max"] = "max"
    result.apply_create(reply(second), "20-b")
    merged = result.adjust.linux.resources
    assert merged.memory.HasField("limit")
    assert merged.memory.limit.value == 0
    assert (merged.cpu.cpus, merged.cpu.shares.value, merged.pids.limit) == ("0-1", 1024, 100)
    assert dict(merged.unified) == {"memory.high": "1G", "cpu.max": "max"}
    assert result.create_container.linux.resources.cpu.shares.value == 1024
    clash = nri.ContainerAdjustment()
    clash.linux.resources.unified["memory.high"] = "2G"
    with pytest.raises(ConflictError, match=r"CgroupsUnified memory\.high"):
        result.apply_create(reply(clash), "30-c")
    clash = nri.ContainerAdjustment()
    clash.linux.resources.cpu.cpus = "3"
    with pytest.raises(ConflictError, match=r'plugins "30-c" and "10-a" both tried to set CPUSetCPUs$'):
        result.apply_create(reply(clash), "30-c")


def test_namespaces_sysctls_and_whole_fields() -> None:
    result = creating(linux=nri.LinuxContainer(namespaces=[nri.LinuxNamespace(type="network", path="/a")]))
    adjust = nri.ContainerAdjustment()
    adjust.linux.namespaces.add(type="-network")
    adjust.linux.namespaces.add(type="ipc", path="/ipc")
    adjust.linux.sysctl["net.core.somaxconn"] = "1024"
    adjust.linux.oom_score_adj.value = -500
    adjust.linux.cgroups_path = "/pods/x"
    result.apply_create(reply(adjust), "10-a")
    assert [(n.type, n.path) for n in result.create_container.linux.namespaces] == [("ipc", "/ipc")]
    assert [n.type for n in result.adjust.linux.namespaces] == ["-network", "ipc"]
    assert dict(result.adjust.linux.sysctl) == {"net.core.somaxconn": "1024"}
    assert result.create_container.linux.oom_score_adj.value == -500
    assert result.adjust.linux.cgroups_path == "/pods/x"
    again = nri.ContainerAdjustment()
    again.linux.oom_score_adj.value = 0
    with pytest.raises(ConflictError, match="OomScoreAdj"):
        result.apply_create(reply(again), "20-b")


def test_rdt_removal_then_setting() -> None:
    result = creating()
    remove = nri.ContainerAdjustment()
    remove.linux.rdt.remove = True
    result.apply_create(reply(remove), "10-a")
    assert result.adjust.linux.rdt.remove
    other = nri.ContainerAdjustment()
    other.linux.rdt.clos_id.value = "gold"
    with pytest.raises(ConflictError, match="RdtClosID"):  # cleared by 10-a: nobody else may set it
        result.apply_create(reply(other), "20-b")
    result.apply_create(reply(other), "10-a")
    assert (result.adjust.linux.rdt.clos_id.value, result.adjust.linux.rdt.remove) == ("gold", False)


def test_updates_of_other_containers_merge_and_may_be_allowed_to_fail() -> None:
    result = creating()
    first = nri.ContainerUpdate(container_id="c2")
    first.linux.resources.cpu.shares.value = 2
    second = nri.ContainerUpdate(container_id="c2", ignore_failure=True)
    second.linux.resources.cpu.quota.value = 3
    result.apply_create(reply(nri.ContainerAdjustment(), first), "10-a")
    result.apply_create(reply(nri.ContainerAdjustment(), second), "20-b")
    [update] = result.create_response().update
    assert (update.linux.resources.cpu.shares.value, update.linux.resources.cpu.quota.value) == (2, 3)
    assert not update.ignore_failure  # only when every plugin allows it
    conflicting = nri.ContainerUpdate(container_id="c2", ignore_failure=True)
    conflicting.linux.resources.cpu.shares.value = 99
    result.apply_create(reply(nri.ContainerAdjustment(), conflicting), "30-c")  # ignored failure: no change
    assert result.create_response().update[0].linux.resources.cpu.shares.value == 2
    conflicting.ignore_failure = False
    with pytest.raises(ConflictError, match="CPUShares"):
        result.apply_create(reply(nri.ContainerAdjustment(), conflicting), "40-d")
    with pytest.raises(ConflictError, match='plugin "50-e" asked update of "c1" during creation'):
        result.apply_create(reply(nri.ContainerAdjustment(), nri.ContainerUpdate(container_id="c1")), "50-e")


def test_update_of_the_target_container_starts_from_the_requested_resources() -> None:
    request = nri.UpdateContainerRequest(container=nri.Container(id="c1"))
    request.linux_resources.memory.limit.value = 100
    result = Result(update=request)
    change = nri.ContainerUpdate(container_id="c1")
    change.linux.resources.cpu.shares.value = 7
    change.linux.resources.pids.limit = 64
    result.apply_updates([change], "10-a")
    assert request.linux_resources.cpu.shares.value == 7  # what the next plugin is sent
    [target] = result.update_response()
    assert (target.linux.resources.memory.limit.value, target.linux.resources.cpu.shares.value) == (100, 7)
    assert target.linux.resources.pids.limit == 64
    assert Result(update=nri.UpdateContainerRequest(container=nri.Container(id="c9"))).update_response() == []


def test_owners_conflict_rules_and_proto() -> None:
    owners = Owners()
    owners.claim("c", nri.MemLimit, "10-a")
    with pytest.raises(ConflictError):
        owners.claim("c", nri.MemLimit, "10-a")  # even the same plugin, twice
    owners.claim_entry("c", nri.Env, "X", "10-a")
    owners.clear_entry("c", nri.Env, "Y", "20-b")
    owners.claim_entry("c", nri.Env, "Y", "20-b")
    owners.accumulate("c", nri.OciHooks, "10-a")
    message = owners.to_proto()
    assert dict(message.owners["c"].simple) == {nri.MemLimit: "10-a", nri.OciHooks: "10-a"}
    assert dict(message.owners["c"].compound[nri.Env].owners) == {"X": "10-a", "Y": "20-b"}
