"""Every generation, recorded in SQLite next to the outputs: who made it, in which tab, when, with
which parameters, and where the PNG is.

One row per image, written once its file is complete and just before the file is renamed into
place (studio/outputs.py), so every PNG has its row; a process killed between the two leaves a row
without a file, which remove_missing() deletes at the next start. Deleting removes the row first,
then the file, for the same reason.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS generations (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    owner    TEXT NOT NULL,
    tab      TEXT NOT NULL,
    created  REAL NOT NULL,
    path     TEXT NOT NULL UNIQUE,
    seed     INTEGER,
    infotext TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS generations_by_owner ON generations (owner, created DESC);
"""


@dataclass(frozen=True)
class Entry:
    id: int
    owner: str
    tab: str
    created: float
    path: Path
    seed: int | None
    infotext: str


class History:
    def __init__(self, path: Path, shared: bool = False):
        """`shared`: everyone sees every generation (a single-user install)."""
        self.path = path
        self.shared = shared
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def add_many(self, owner: str, tab: str, items: list[tuple[Path, int, str]]) -> None:
        """Record (path, seed, infotext) rows of one generation, all or none."""
        now = time.time()
        with self._lock:
            with _transaction(self._db):
                self._db.executemany(
                    "INSERT INTO generations (owner, tab, created, path, seed, infotext) VALUES (?, ?, ?, ?, ?, ?)",
                    [(owner, tab, now, str(path), seed, text) for path, seed, text in items],
                )

    def remove_missing(self, paths: list[Path] | None = None) -> int:
        """Delete the rows (of `paths`, or all) whose file does not exist; how many went."""
        with self._lock:
            if paths is None:
                paths = [Path(row[0]) for row in self._db.execute("SELECT path FROM generations")]
            gone = [(str(path),) for path in paths if not path.exists()]
            if gone:
                with _transaction(self._db):
                    self._db.executemany("DELETE FROM generations WHERE path = ?", gone)
        return len(gone)

    def _scope(self, owner: str) -> tuple[str, tuple]:
        return ("", ()) if self.shared else ("WHERE owner = ?", (owner,))

    def count(self, owner: str) -> int:
        where, args = self._scope(owner)
        with self._lock:
            return self._db.execute(f"SELECT COUNT(*) FROM generations {where}", args).fetchone()[0]

    def page(self, owner: str, page: int, per_page: int = 24) -> list[Entry]:
        """The owner's generations, newest first; page 0 is the newest."""
        where, args = self._scope(owner)
        with self._lock:
            rows = self._db.execute(
                f"SELECT id, owner, tab, created, path, seed, infotext FROM generations {where} "
                "ORDER BY created DESC, id DESC LIMIT ? OFFSET ?",
                (*args, per_page, max(0, page) * per_page),
            ).fetchall()
        return [Entry(*row[:4], Path(row[4]), *row[5:]) for row in rows]

    def get(self, owner: str, entry_id: int) -> Entry | None:
        where, args = self._scope(owner)
        where = f"{where} AND id = ?" if where else "WHERE id = ?"
        with self._lock:
            row = self._db.execute(
                f"SELECT id, owner, tab, created, path, seed, infotext FROM generations {where}", (*args, entry_id)
            ).fetchone()
        return Entry(*row[:4], Path(row[4]), *row[5:]) if row else None

    def delete(self, owner: str, entry_id: int) -> bool:
        """Delete one of the owner's generations: its row, then its file. False if not theirs."""
        entry = self.get(owner, entry_id)
        if entry is None:
            return False
        with self._lock:
            with _transaction(self._db):
                self._db.execute("DELETE FROM generations WHERE id = ?", (entry_id,))
        entry.path.unlink(missing_ok=True)
        return True

    def close(self) -> None:
        with self._lock:
            self._db.close()


class _transaction:
    def __init__(self, db: sqlite3.Connection):
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind, value, traceback):
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")
