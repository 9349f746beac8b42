"""ReplyCache: language-model replies kept in one SQLite file that several processes share."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

__all__ = ["ReplyCache"]

logger = logging.getLogger(__name__)

VERSION = 1
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
    "prompt TEXT NOT NULL, content TEXT NOT NULL, created REAL NOT NULL)"
)
_INSERT = "INSERT OR IGNORE INTO replies VALUES (?, ?, ?, ?, ?)"
_CHUNK = 500  # keys per SELECT, under SQLite's limit on bound parameters


class ReplyCache:
    """Language-model replies by request key in one SQLite file, shared by processes.

    The file (format version 1, SQLite's ``PRAGMA user_version``) holds one table:

    ```sql
    CREATE TABLE replies (
        key     TEXT PRIMARY KEY,  -- SHA-256 of the request body (OpenAIChatDecision.key)
        model   TEXT NOT NULL,     -- the served model's name
        prompt  TEXT NOT NULL,     -- the user message
        content TEXT NOT NULL,     -- the reply's text
        created REAL NOT NULL      -- when it was stored, seconds since the epoch
    );
    ```

    in SQLite's default rollback-journal mode (it works on network file systems, where WAL
    does not), one reply per transaction: a reply is on disk when :meth:`put` returns,
    concurrent writers wait for each other (up to ``timeout`` seconds) instead of overwriting
    each other, and a process killed in the middle of a write leaves the last committed
    state, which the next opener restores from the journal. The first reply stored under a
    key stays (``INSERT OR IGNORE``). Any SQLite client reads it:
    ``sqlite3 replies.sqlite 'SELECT prompt, content FROM replies'``.

    The JSON object of earlier versions (``{key: {"model", "prompt", "content"}}``, rewritten
    whole after each step, so that concurrent writers lost each other's replies) is migrated
    on first open, by one process under a file lock: its replies move into a SQLite file at
    the same path, and the JSON text is kept beside it as ``<name>.bak``.

    Args:
        path: the file; created, with its folder, if missing.
        timeout: seconds to wait for another process's write before giving up.
    """

    def __init__(self, path: str | Path, *, timeout: float = 60.0) -> None:
        self.path = Path(path)
        self.timeout = float(timeout)
        if self.path.is_dir():
            raise ValueError(f"cache_path {str(self.path)!r} is a folder; pass a file path.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._connect() as db:
                self._create(db)
        except sqlite3.DatabaseError as err:
            if "not a database" not in str(err):
                raise
            self._migrate()
            with self._connect() as db:
                self._create(db)

    def _create(self, db: sqlite3.Connection) -> None:
        """Check the file's format; create the table in a new (empty) file."""
        db.execute("BEGIN IMMEDIATE")  # two processes creating the file: one after the other
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
            if version > VERSION:
                raise ValueError(
                    f"cache file {str(self.path)!r} has format version {version}, newer than "
                    f"this lpm-graph reads ({VERSION}); upgrade lpm-graph or pass another "
                    "cache_path."
                )
            if tables - {"replies", "sqlite_autoindex_replies_1"}:
                raise ValueError(
                    f"cache file {str(self.path)!r} is a SQLite database of something else "
                    f"(tables {sorted(tables)}); pass another cache_path."
                )
            if not version:
                db.execute(_SCHEMA)
                db.execute(f"PRAGMA user_version = {VERSION}")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    @contextlib.contextmanager
    def _connect(self, path: Path | None = None) -> Iterator[sqlite3.Connection]:
        """A connection for one operation (never kept open, so a forked child opens its own);
        every statement outside ``BEGIN`` is its own transaction."""
        db = sqlite3.connect(path or self.path, timeout=self.timeout, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    def get(self, keys: Iterable[str]) -> dict[str, dict[str, str]]:
        """The stored entries (``{"model", "prompt", "content"}``) among ``keys``."""
        keys = list(keys)
        found = {}
        with self._connect() as db:
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                rows = db.execute(
                    "SELECT key, model, prompt, content FROM replies WHERE key IN "
                    f"({', '.join('?' * len(chunk))})",
                    chunk,
                )
                found.update({k: {"model": m, "prompt": p, "content": c} for k, m, p, c in rows})
        return found

    def put(self, key: str, entry: Mapping[str, str]) -> None:
        """Store one reply, on disk when this returns; a key already stored keeps its reply."""
        row = (key, entry["model"], entry["prompt"], entry["content"], time.time())
        with self._connect() as db:
            db.execute(_INSERT, row)

    def items(self) -> Iterator[tuple[str, dict[str, str]]]:
        """Every stored ``(key, entry)``, oldest first."""
        with self._connect() as db:
            rows = db.execute("SELECT key, model, prompt, content FROM replies ORDER BY created")
            for k, m, p, c in rows.fetchall():
                yield k, {"model": m, "prompt": p, "content": c}

    def __len__(self) -> int:
        with self._connect() as db:
            return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def __repr__(self) -> str:
        return f"ReplyCache({str(self.path)!r})"

    # ---------------------------------------------------------------- the older JSON format

    def _migrate(self) -> None:
        """Replace the JSON cache at ``path`` by a SQLite file holding its replies.

        Under an exclusive ``flock`` of the JSON file, so that of several processes opening
        it at once one migrates and the others find the SQLite file.
        """
        with open(self.path, "rb") as f:
            with contextlib.suppress(ImportError):  # no fcntl (Windows): no lock
                import fcntl

                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            if os.fstat(f.fileno()).st_ino != os.stat(self.path).st_ino:
                return  # another process migrated it while this one waited for the lock
            text = f.read()
            if text.startswith(b"SQLite format 3\0"):  # migrated before this one opened it
                return
            try:
                entries = json.loads(text)
            except ValueError as err:
                raise ValueError(
                    f"cache file {str(self.path)!r} is neither a reply cache (SQLite) nor the "
                    f"older JSON format ({err}); pass another cache_path or delete the file."
                ) from err
            if not isinstance(entries, dict) or not all(
                isinstance(e, dict) and isinstance(e.get("content"), str) for e in entries.values()
            ):
                raise ValueError(
                    f"cache file {str(self.path)!r} holds JSON but not a reply cache "
                    "({key: {'model', 'prompt', 'content'}}); pass another cache_path."
                )
            now = time.time()
            rows = [(k, e.get("model", ""), e.get("prompt", ""), e["content"], now)
                    for k, e in entries.items()]  # fmt: skip
            self.path.with_name(self.path.name + ".bak").write_bytes(text)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".replies-", suffix=".tmp")
            os.close(fd)
            try:
                with self._connect(Path(tmp)) as db:
                    self._create(db)
                    db.execute("BEGIN")
                    db.executemany(_INSERT, rows)
                    db.execute("COMMIT")
                with open(tmp, "rb+") as t:
                    os.fsync(t.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        with contextlib.suppress(OSError):  # make the rename durable
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        logger.info(
            "migrated %d cached replies from JSON to SQLite in %s (the JSON is kept as %s.bak)",
            len(rows), self.path, self.path.name,
        )  # fmt: skip
