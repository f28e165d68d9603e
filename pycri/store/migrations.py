"""Numbered schema migrations of the state database.

``MIGRATIONS[i]`` moves the schema from version ``i`` to ``i + 1``; the
database's ``PRAGMA user_version`` records how many have run. Append new
migrations; never edit one that has shipped.
"""

from __future__ import annotations

MIGRATIONS: list[str] = [
    # 1: the first schema.
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE sandboxes (
        id              TEXT PRIMARY KEY,
        name            TEXT NOT NULL,
        namespace       TEXT NOT NULL,
        uid             TEXT NOT NULL,
        attempt         INTEGER NOT NULL,
        state           TEXT NOT NULL,
        runtime_handler TEXT NOT NULL,
        created_at      INTEGER NOT NULL,
        config          BLOB NOT NULL,
        data            TEXT NOT NULL
    );
    CREATE UNIQUE INDEX sandboxes_identity ON sandboxes (name, namespace, uid, attempt);
    CREATE TABLE containers (
        id          TEXT PRIMARY KEY,
        sandbox_id  TEXT NOT NULL REFERENCES sandboxes (id),
        name        TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        state       TEXT NOT NULL,
        created_at  INTEGER NOT NULL,
        config      BLOB NOT NULL,
        data        TEXT NOT NULL
    );
    CREATE UNIQUE INDEX containers_identity ON containers (sandbox_id, name, attempt);
    CREATE TABLE images (
        id           TEXT PRIMARY KEY,
        repo_tags    TEXT NOT NULL,
        repo_digests TEXT NOT NULL,
        size         INTEGER NOT NULL,
        created_at   INTEGER NOT NULL,
        data         TEXT NOT NULL
    );
    """,
    # 2: a pod sandbox left over from a failed RunPodSandbox (it could not all be undone) stays listed
    # until it is removed, but releases its name at once, so that the run can be retried.
    """
    ALTER TABLE sandboxes ADD COLUMN name_released INTEGER NOT NULL DEFAULT 0;
    DROP INDEX sandboxes_identity;
    CREATE UNIQUE INDEX sandboxes_identity ON sandboxes (name, namespace, uid, attempt) WHERE name_released = 0;
    """,
]
