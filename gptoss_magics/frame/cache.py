"""The on-disk result cache of DataFrame maps: SQLite in the cache folder, mode 0600.

It never loses generated answers and never stops a map:

* a cache that cannot be opened for writing (read-only folder or file) is opened
  read-only: cached rows are served, new rows are not saved, one warning says so;
* a write that fails (a full disk) turns the cache off for the rest of the run with one
  warning; the generated rows stay in the result;
* only a file SQLite reports as damaged (when opened, or later when read) is moved aside
  (``.damaged-<time>``), and only when it can be.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import urllib.parse
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import GptOssWarning

_CHUNK = 500  # SQLite's bound on host parameters is 999 on old builds


def _warn(message: str) -> None:
    warnings.warn(message, GptOssWarning, stacklevel=4)


class ResultCache:
    """Finished rows on disk. ``readonly`` and ``broken`` say what it can still do."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = threading.Lock()
        self.readonly = False
        self.broken: str | None = None  # why writing stopped
        self.db: sqlite3.Connection | None = None
        try:
            self.db = self._open()
        except sqlite3.DatabaseError as exc:
            if not self._writable():
                self._open_readonly_or_off(exc)
            elif _is_damage(exc):
                self._move_aside(exc)
                self.db = self._open()
            else:
                self._open_readonly_or_off(exc)

    # ------------------------------------------------------------------ opening
    def _writable(self) -> bool:
        folder = os.path.dirname(self.path) or "."
        if os.path.exists(self.path):
            return os.access(self.path, os.W_OK) and os.access(folder, os.W_OK)
        return os.access(folder, os.W_OK)

    def _open(self) -> sqlite3.Connection:
        # Create the file readable by the user only (SQLite gives its -wal and -shm files
        # the same mode). Never open and close an existing database file ourselves: closing
        # any descriptor of it drops the POSIX locks that this process's SQLite connections
        # hold on it, which can corrupt the database.
        try:
            os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise sqlite3.OperationalError(f"cannot create {self.path}: {exc}") from exc
        db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS rows (key TEXT PRIMARY KEY, "
                       "value TEXT NOT NULL, created REAL NOT NULL)")
            db.commit()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def _open_readonly_or_off(self, exc: Exception) -> None:
        self.readonly = True
        db = self._open_readonly() if os.path.exists(self.path) else None
        if db is not None:
            self.db = db
            self.broken = "read-only"
            _warn(f"the result cache {self.path} cannot be written ({exc}): cached rows "
                  "are served from it, new rows are not saved")
            return
        self.broken = str(exc)
        _warn(f"the result cache {self.path} cannot be used ({exc}): this map runs without "
              "it (nothing is served from or saved to the cache)")

    def _open_readonly(self) -> sqlite3.Connection | None:
        """A read-only connection, or None. A WAL database whose -wal and -shm files are
        gone (closed cleanly) and cannot be created (read-only folder) opens only as
        ``immutable``: nothing in this process writes it then."""
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path))
        for query in ("mode=ro", "mode=ro&immutable=1"):
            try:
                db = sqlite3.connect(f"{uri}?{query}", uri=True, check_same_thread=False,
                                     timeout=30)
            except sqlite3.Error:
                continue
            try:
                db.execute("SELECT count(*) FROM rows").fetchone()
            except sqlite3.Error:
                db.close()  # an unclosed connection would hold the file until collected
                continue
            return db
        return None

    def _move_aside(self, exc: Exception) -> None:
        aside = f"{self.path}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(self.path, aside)
        for suffix in ("-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(self.path + suffix, aside + suffix)
        _warn(f"the result cache could not be read ({exc}); it was moved to {aside} and a "
              "new one started")

    # ------------------------------------------------------------------ use
    def get_many(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Cached values for those of ``keys`` that are present."""
        out: dict[str, dict[str, Any]] = {}
        if self.db is None:
            return out
        try:
            with self._lock:
                for i in range(0, len(keys), _CHUNK):
                    chunk = list(keys[i:i + _CHUNK])
                    marks = ",".join("?" * len(chunk))
                    for key, value in self.db.execute(
                            f"SELECT key, value FROM rows WHERE key IN ({marks})", chunk):
                        with contextlib.suppress(ValueError):
                            out[key] = json.loads(value)
        except sqlite3.Error as exc:  # damaged past its first page, or unreadable
            self._read_failed(exc)
            return {}
        return out

    def _read_failed(self, exc: sqlite3.Error) -> None:
        """A read failed: move a damaged file aside and start a new one when possible,
        else go on without the cache (one warning either way)."""
        self.close()
        if _is_damage(exc) and not self.readonly and self._writable():
            self._move_aside(exc)
            try:
                self.db = self._open()
                return
            except sqlite3.DatabaseError as again:
                exc = again
        self.broken = str(exc)
        _warn(f"the result cache {self.path} cannot be read ({exc}): this map runs without "
              "it (nothing is served from or saved to the cache)")

    def count(self, keys: Sequence[str]) -> int:
        """How many of ``keys`` are stored (committed) now."""
        return len(self.get_many(keys))

    def put(self, key: str, value: Mapping[str, Any]) -> bool:
        """Store one finished row, committed at once (or not at all). A failed write turns
        writing off with one warning and returns False; it never raises."""
        if self.db is None or self.broken is not None:
            return False
        try:
            with self._lock, self.db:  # commits, or rolls back on any exception
                self.db.execute("INSERT OR REPLACE INTO rows VALUES (?, ?, ?)",
                                (key, json.dumps(value), time.time()))
        except (sqlite3.Error, OSError) as exc:
            self.broken = str(exc)
            _warn(f"the result cache {self.path} could not be written ({exc}); the map goes "
                  "on without saving rows, and every generated row is still returned")
            return False
        return True

    def close(self) -> None:
        """Close the database (idempotent)."""
        with self._lock:
            if self.db is not None:
                with contextlib.suppress(sqlite3.Error):
                    self.db.close()
                self.db = None


def _is_damage(exc: Exception) -> bool:
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text or "corrupt" in text
