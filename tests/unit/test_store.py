from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from pycri.store import ContainerRow, ImageRow, SandboxRow, Store, StoreError
from pycri.store.migrations import MIGRATIONS


def sandbox(sid: str = "a" * 64, attempt: int = 0) -> SandboxRow:
    return SandboxRow(
        id=sid,
        name="web",
        namespace="default",
        uid="uid-1",
        attempt=attempt,
        state="SANDBOX_READY",
        runtime_handler="runc",
        created_at=1,
        config=b"\x0a\x00",
        data={"netns": "/run/netns/x", "ips": ["10.0.0.2"]},
    )


async def test_rows_survive_reopen(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = await Store.open(db)
    await store.sandboxes.insert(sandbox())
    await store.containers.insert(
        ContainerRow(id="c" * 64, sandbox_id="a" * 64, name="app", attempt=0, state="CREATED", created_at=2, config=b"", data={})
    )
    await store.images.put(ImageRow(id="sha256:" + "1" * 64, repo_tags=["x:1"], repo_digests=[], size=10, created_at=3))
    await store.set_meta("pod_cidr", "10.1.0.0/24")
    await store.close()

    store = await Store.open(db)
    try:
        assert await store.sandboxes.all() == [sandbox()]
        containers = await store.containers.all()
        assert [c.name for c in containers] == ["app"]
        image = await store.images.get("sha256:" + "1" * 64)
        assert image is not None
        assert image.repo_tags == ["x:1"]
        assert await store.get_meta("pod_cidr") == "10.1.0.0/24"
        assert await store.get_meta("absent") is None
    finally:
        await store.close()


async def test_update_and_delete(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    try:
        await store.sandboxes.insert(sandbox())
        await store.sandboxes.update("a" * 64, state="SANDBOX_NOTREADY", data={"stopped": True})
        row = await store.sandboxes.get("a" * 64)
        assert row is not None
        assert row.state == "SANDBOX_NOTREADY"
        assert row.data == {"stopped": True}
        await store.sandboxes.delete("a" * 64)
        assert await store.sandboxes.get("a" * 64) is None
    finally:
        await store.close()


async def test_identity_is_unique(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    try:
        await store.sandboxes.insert(sandbox())
        with pytest.raises(sqlite3.IntegrityError):
            await store.sandboxes.insert(sandbox(sid="b" * 64))
        await store.sandboxes.insert(sandbox(sid="b" * 64, attempt=1))
    finally:
        await store.close()


async def test_a_released_name_is_free_again(tmp_path: Path) -> None:
    """A pod left over from a failed RunPodSandbox keeps its row but not its name (name_released)."""
    store = await Store.open(tmp_path / "state.db")
    try:
        leftover = sandbox()
        leftover.name_released = 1
        await store.sandboxes.insert(leftover)
        await store.sandboxes.insert(sandbox(sid="b" * 64))  # the same name, namespace, uid and attempt
        with pytest.raises(sqlite3.IntegrityError):
            await store.sandboxes.insert(sandbox(sid="c" * 64))  # a name not released is still unique
        assert {(r.id[0], r.name_released) for r in await store.sandboxes.all()} == {("a", 1), ("b", 0)}
    finally:
        await store.close()


async def test_migration_keeps_first_schema_rows(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    conn = sqlite3.connect(db)
    for statement in MIGRATIONS[0].split(";"):
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    row = sandbox()
    conn.execute(
        "INSERT INTO sandboxes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (row.id, row.name, row.namespace, row.uid, row.attempt, row.state, row.runtime_handler, 1, row.config, "{}"),
    )
    conn.commit()
    conn.close()
    store = await Store.open(db)
    try:
        (migrated,) = await store.sandboxes.all()
        assert (migrated.id, migrated.name_released) == (row.id, 0)
    finally:
        await store.close()


async def test_container_needs_its_sandbox(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    try:
        with pytest.raises(sqlite3.IntegrityError):
            await store.containers.insert(
                ContainerRow(id="c" * 64, sandbox_id="missing", name="app", attempt=0, state="CREATED", created_at=1, config=b"")
            )
    finally:
        await store.close()


async def test_schema_version_and_wal(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = await Store.open(db)
    await store.close()
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        conn.close()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer than this pycri knows"):
        await Store.open(db)


async def test_closed_store_says_so(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "state.db")
    await store.close()
    with pytest.raises(RuntimeError):
        await store.get_meta("x")
