"""The SQLite state database: the only module that speaks SQL.

One connection lives on one dedicated thread; every call is submitted to that
thread, so the event loop never blocks on disk and SQLite sees a single writer.
The database runs in WAL mode with full fsync: a row written before a side
effect is declared done survives a daemon crash or a power cut.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from pycri.store.migrations import MIGRATIONS

T = TypeVar("T")
R = TypeVar("R", bound="Row")


@dataclass
class Row:
    """A table row; subclasses list the columns. ``data`` is a free-form JSON object."""

    id: str

    def columns(self) -> dict[str, Any]:
        values = dataclasses.asdict(self)
        for key, value in values.items():
            if isinstance(value, (dict, list)):
                values[key] = json.dumps(value, sort_keys=True)
        return values


@dataclass
class SandboxRow(Row):
    name: str
    namespace: str
    uid: str
    attempt: int
    state: str
    runtime_handler: str
    created_at: int
    config: bytes
    data: dict[str, Any] = field(default_factory=dict)
    name_released: int = 0  # 1: its (name, namespace, uid, attempt) may be taken by another sandbox


@dataclass
class ContainerRow(Row):
    sandbox_id: str
    name: str
    attempt: int
    state: str
    created_at: int
    config: bytes
    data: dict[str, Any] = field(default_factory=dict)


@dataclass
class ImageRow(Row):
    repo_tags: list[str]
    repo_digests: list[str]
    size: int
    created_at: int
    data: dict[str, Any] = field(default_factory=dict)


class StoreError(RuntimeError):
    """The database could not be opened or migrated."""


class Table(Generic[R]):
    """CRUD over one table whose columns are the fields of ``row_type``."""

    def __init__(self, store: Store, name: str, row_type: type[R]) -> None:
        self._store = store
        self._name = name
        self._type = row_type
        self._fields = [f.name for f in dataclasses.fields(row_type)]
        self._json = {f.name for f in dataclasses.fields(row_type) if f.name == "data" or "list" in str(f.type)}
        cols = ", ".join(self._fields)
        marks = ", ".join(f":{c}" for c in self._fields)
        self._upsert = f"INSERT OR REPLACE INTO {name} ({cols}) VALUES ({marks})"
        self._insert = f"INSERT INTO {name} ({cols}) VALUES ({marks})"
        self._select = f"SELECT {cols} FROM {name}"

    def _row(self, values: tuple[Any, ...]) -> R:
        kwargs = dict(zip(self._fields, values, strict=True))
        for key in self._json:
            kwargs[key] = json.loads(kwargs[key])
        return self._type(**kwargs)

    async def insert(self, row: R) -> None:
        """Add a new row; sqlite3.IntegrityError if its id or identity exists."""
        await self._store.execute(self._insert, row.columns())

    async def put(self, row: R) -> None:
        """Insert or replace the row with this id."""
        await self._store.execute(self._upsert, row.columns())

    async def update(self, row_id: str, **changes: Any) -> None:
        sets = ", ".join(f"{k} = :{k}" for k in changes)
        params = {k: json.dumps(v, sort_keys=True) if k in self._json else v for k, v in changes.items()}
        params["__id"] = row_id
        await self._store.execute(f"UPDATE {self._name} SET {sets} WHERE id = :__id", params)

    async def get(self, row_id: str) -> R | None:
        rows = await self._store.query(f"{self._select} WHERE id = ?", (row_id,))
        return self._row(rows[0]) if rows else None

    async def all(self) -> list[R]:
        return [self._row(r) for r in await self._store.query(self._select + " ORDER BY created_at, id")]

    async def delete(self, row_id: str) -> None:
        await self._store.execute(f"DELETE FROM {self._name} WHERE id = ?", (row_id,))


class Store:
    """The state database. Open with ``await Store.open(path)``; close when done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pycri-store")
        self._conn: sqlite3.Connection | None = None
        self.sandboxes: Table[SandboxRow] = Table(self, "sandboxes", SandboxRow)
        self.containers: Table[ContainerRow] = Table(self, "containers", ContainerRow)
        self.images: Table[ImageRow] = Table(self, "images", ImageRow)

    @classmethod
    async def open(cls, path: Path) -> Store:
        store = cls(path)
        try:
            await store._call(store._open_sync)
        except BaseException:
            store._executor.shutdown(wait=True)
            raise
        return store

    def _open_sync(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 5000")
            self._conn = conn
            self._migrate(conn)
        except sqlite3.Error as exc:
            raise StoreError(f"state database {self.path}: {exc}") from exc

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > len(MIGRATIONS):
            raise StoreError(
                f"schema version {version} is newer than this pycri knows ({len(MIGRATIONS)}); refusing to downgrade"
            )
        for number in range(version, len(MIGRATIONS)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _statements(MIGRATIONS[number]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        return len(MIGRATIONS)

    async def _call(self, fn: Callable[[], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError("state database is closed")
        return self._conn

    async def execute(self, sql: str, params: Any = ()) -> None:
        def run() -> None:
            self._connection().execute(sql, params)

        await self._call(run)

    async def query(self, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        def run() -> list[tuple[Any, ...]]:
            return self._connection().execute(sql, params).fetchall()

        return await self._call(run)

    async def get_meta(self, key: str) -> str | None:
        rows = await self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    async def set_meta(self, key: str, value: str) -> None:
        await self.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    async def close(self) -> None:
        def run() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await self._call(run)
        finally:
            self._executor.shutdown(wait=True)


def _statements(script: str) -> list[str]:
    """Split a migration script into statements (they contain no string literals with ';')."""
    return [s.strip() for s in script.split(";") if s.strip()]
