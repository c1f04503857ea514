"""The broker's embedded state: one SQLite file, mode 0600 (tools, invocations, root keys,
and the secrets grants may attach to network requests)."""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from ._proto import capabilities_pb2 as caps
from .audit.sink import now_rfc3339
from .core.tokens import Keyring

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS keys (
  key_id TEXT PRIMARY KEY, secret BLOB NOT NULL, created_at TEXT NOT NULL,
  current INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS tools (
  name TEXT PRIMARY KEY, image TEXT NOT NULL, image_id TEXT NOT NULL,
  manifest TEXT NOT NULL, registered_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS revocations (
  block_id TEXT PRIMARY KEY, revoked_at TEXT NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS invocations (
  id TEXT PRIMARY KEY, tool TEXT NOT NULL, token_id TEXT NOT NULL, grant_id TEXT NOT NULL,
  container_id TEXT, status TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT,
  error TEXT);
CREATE TABLE IF NOT EXISTS secrets (
  name TEXT PRIMARY KEY, value BLOB NOT NULL, created_at TEXT NOT NULL);
"""


@dataclass(frozen=True)
class ToolRecord:
    name: str
    image: str
    image_id: str
    manifest: caps.Manifest
    registered_at: str


class State:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        os.chmod(path, 0o600)  # holds the root keys
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        # Invocation bookkeeping is not evidence (the audit log is) and sits on the hot path
        # of every call: its own connection commits without fsync (WAL + NORMAL survives a
        # broker crash; only an OS crash may lose the last rows).
        self._inv = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._inv.execute("PRAGMA synchronous=NORMAL")
        # Rows are written once and rarely read again: a small page cache, instead of the
        # default 2 MiB that filled up (as RSS) with every call's new pages.
        self._inv.execute("PRAGMA cache_size=-128")
        self._lock = threading.Lock()

    def close(self) -> None:
        self._inv.close()
        self._db.close()

    # -- identity and keys ---------------------------------------------------------------
    def broker_id(self) -> str:
        """A stable id for this state dir; labels its containers for reaping."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key='broker_id'").fetchone()
            if row:
                return str(row[0])
            value = secrets.token_hex(6)
            self._db.execute("INSERT INTO meta VALUES ('broker_id', ?)", (value,))
            return value

    def keyring(self) -> Keyring:
        """Root keys; the first call creates one. Rotation adds a key and makes it current;
        old keys keep verifying until removed."""
        with self._lock:
            rows = self._db.execute("SELECT key_id, secret, current FROM keys").fetchall()
            if not rows:
                key_id = "k" + secrets.token_hex(4)
                self._db.execute("INSERT INTO keys VALUES (?, ?, ?, 1)",
                                 (key_id, secrets.token_bytes(32), now_rfc3339()))
                rows = self._db.execute("SELECT key_id, secret, current FROM keys").fetchall()
        current = next(r[0] for r in rows if r[2])
        return Keyring({r[0]: bytes(r[1]) for r in rows}, current)

    def rotate_key(self) -> Keyring:
        """Add a fresh key and make it the one that seals; the old keys keep verifying."""
        with self._lock:
            key_id = "k" + secrets.token_hex(4)
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("UPDATE keys SET current=0")
            self._db.execute("INSERT INTO keys VALUES (?, ?, ?, 1)",
                             (key_id, secrets.token_bytes(32), now_rfc3339()))
            self._db.execute("COMMIT")
        return self.keyring()

    # -- revocation ----------------------------------------------------------------------
    def revoke(self, block_id: str, reason: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO revocations VALUES (?, ?, ?)",
                             (block_id, now_rfc3339(), reason))

    def revoked(self) -> set[str]:
        with self._lock:
            return {r[0] for r in self._db.execute("SELECT block_id FROM revocations")}

    # -- secrets -------------------------------------------------------------------------
    # SECURITY LIMITATION: values are stored unencrypted in this 0600 file, beside the root
    # keys; whoever reads it can already mint tokens.
    def put_secret(self, name: str, value: bytes) -> tuple[str, str, int]:
        created = now_rfc3339()
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO secrets VALUES (?, ?, ?)",
                             (name, value, created))
        return name, created, len(value)

    def secret(self, name: str) -> bytes | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM secrets WHERE name=?", (name,)).fetchone()
        return bytes(row[0]) if row else None

    def list_secrets(self) -> list[tuple[str, str, int]]:
        """(name, created, length) of each stored secret; never a value."""
        with self._lock:
            return [(r[0], r[1], int(r[2])) for r in self._db.execute(
                "SELECT name, created_at, length(value) FROM secrets ORDER BY name")]

    def delete_secret(self, name: str) -> tuple[str, str, int] | None:
        with self._lock:
            row = self._db.execute("SELECT created_at, length(value) FROM secrets WHERE name=?",
                                   (name,)).fetchone()
            self._db.execute("DELETE FROM secrets WHERE name=?", (name,))
        return (name, row[0], int(row[1])) if row else None

    # -- tools ---------------------------------------------------------------------------
    def put_tool(self, manifest: caps.Manifest, image_id: str) -> ToolRecord:
        rec = ToolRecord(manifest.name, manifest.image, image_id, manifest, now_rfc3339())
        body = json_format.MessageToJson(manifest, preserving_proto_field_name=True)
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO tools VALUES (?, ?, ?, ?, ?)",
                             (rec.name, rec.image, image_id, body, rec.registered_at))
        return rec

    def get_tool(self, name: str) -> ToolRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM tools WHERE name=?", (name,)).fetchone()
        return self._tool(row) if row else None

    def list_tools(self) -> list[ToolRecord]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM tools ORDER BY name").fetchall()
        return [self._tool(r) for r in rows]

    @staticmethod
    def _tool(row: tuple[str, str, str, str, str]) -> ToolRecord:
        manifest = json_format.Parse(row[3], caps.Manifest())
        return ToolRecord(row[0], row[1], row[2], manifest, row[4])

    # -- invocations ---------------------------------------------------------------------
    def start_invocation(self, inv_id: str, tool: str, token_id: str, grant_id: str) -> None:
        with self._lock:
            self._inv.execute(
                "INSERT INTO invocations (id, tool, token_id, grant_id, status, started_at) "
                "VALUES (?, ?, ?, ?, 'starting', ?)",
                (inv_id, tool, token_id, grant_id, now_rfc3339()))

    def update_invocation(self, inv_id: str, status: str, container_id: str | None = None,
                          error: str | None = None) -> None:
        ended = now_rfc3339() if status in ("done", "failed") else None
        with self._lock:
            self._inv.execute(
                "UPDATE invocations SET status=?, container_id=COALESCE(?, container_id), "
                "ended_at=COALESCE(?, ended_at), error=COALESCE(?, error) WHERE id=?",
                (status, container_id, ended, error, inv_id))

    def unfinished_invocations(self) -> list[dict[str, object]]:
        """Invocations neither done nor failed: at broker start, what a crash left."""
        with self._lock:
            cur = self._inv.execute(
                "SELECT * FROM invocations WHERE status NOT IN ('done', 'failed')")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def invocation(self, inv_id: str) -> dict[str, object] | None:
        with self._lock:
            cur = self._inv.execute("SELECT * FROM invocations WHERE id=?", (inv_id,))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        return dict(zip(names, row)) if row else None
