"""The aggregator's tables (SQLAlchemy Core) and engine setup: SQLite (WAL) by default, any URL by configuration.

Durability: SQLite runs in WAL mode with ``synchronous=FULL``, so a committed transaction
survives a kill -9 and a power cut; an update is acknowledged only after its transaction
commits. One server process per SQLite file: writes are serialised by an in-process lock
(``Database.write``). Other databases (PostgreSQL: ``postgresql+psycopg://...``) are used
through the same portable SQL; their own transactions and unique constraints do the work.

The ledger is append-only: no code path updates or deletes a ``ledger`` row. An ``updates`` row
is deleted only while its round is not yet aggregated (its device was revoked), and its body is
emptied once its round is published and the retention time has passed (the digest stays, so a
retry still gets its receipt).

Files: a SQLite database (and its ``-wal``/``-shm``) is created mode 0600 and tightened to 0600
at start-up; device secrets in it are sealed (``sealing``), so the file alone reveals none.
Schema 2 (this code) migrates a schema-1 database in place (``migrate``).
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Engine,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

SCHEMA_VERSION = 2

metadata = MetaData()

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("secret", LargeBinary, nullable=False),
    Column("enrolled_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
)

nonces = Table(
    "nonces",
    metadata,
    Column("device_id", String(128), primary_key=True),
    Column("nonce", String(128), primary_key=True),
    Column("expires_at", Float, nullable=False, index=True),
)

rounds = Table(
    "rounds",
    metadata,
    Column("round_id", Integer, primary_key=True, autoincrement=False),
    Column("state", String(16), nullable=False, index=True),
    Column("config_json", Text, nullable=False),
    Column("base_version", Integer, nullable=False),
    Column("population", Integer, nullable=False),
    Column("sampling_rate", Float, nullable=False),
    Column("noise_multiplier", Float, nullable=False),
    Column("clip_norm", Float, nullable=False),
    Column("target_updates", Integer, nullable=True),
    Column("opened_at", Float, nullable=False),
    Column("deadline_unix", Float, nullable=False),
    Column("closed_at", Float, nullable=True),
    Column("aggregated_at", Float, nullable=True),
    Column("published_at", Float, nullable=True),
    Column("result_version", Integer, nullable=True),
    Column("summary_json", Text, nullable=True),
)

selections = Table(
    "selections",
    metadata,
    Column("round_id", Integer, ForeignKey("rounds.round_id"), primary_key=True),
    Column("device_id", String(128), ForeignKey("devices.device_id"), primary_key=True),
    Column("selected", Boolean, nullable=False),
    Column("checked_in_at", Float, nullable=False),
)

updates = Table(
    "updates",
    metadata,
    Column("round_id", Integer, ForeignKey("rounds.round_id"), primary_key=True),
    Column("device_id", String(128), ForeignKey("devices.device_id"), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("l2_norm", Float, nullable=False),
    Column("accepted_at", Float, nullable=False),
)

rejection_counts = Table(
    "rejection_counts",
    metadata,
    Column("reason", String(32), primary_key=True),
    Column("status", Integer, primary_key=True, autoincrement=False),
    Column("count", Integer, nullable=False),
    Column("last_at", Float, nullable=False),
)
"""Refusals, aggregated: one row per (reason, status), so abuse cannot grow the database."""

ledger = Table(
    "ledger",
    metadata,
    Column("round_id", Integer, ForeignKey("rounds.round_id"), primary_key=True, autoincrement=False),
    Column("event_json", Text, nullable=False),
    Column("sampling_rate", Float, nullable=False),
    Column("noise_multiplier", Float, nullable=False),
    Column("recorded_at", Float, nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("version", Integer, primary_key=True, autoincrement=False),
    Column("round_id", Integer, nullable=True, unique=True),
    Column("params", LargeBinary, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("published_at", Float, nullable=True),
    Column("files_json", Text, nullable=True),
)
"""``files_json``: sha256 of every file of the published version folder, checked on start-up."""


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver level; SQLAlchemy's "begin" event below emits BEGIN itself
    # (pysqlite's own implicit transactions do not cover DDL or SELECT-then-write correctly).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN")


class DatabaseError(RuntimeError):
    """The database cannot be used (damaged, unreadable, newer schema): start-up stops with this message."""


PRIVATE_MODE = 0o600


def _private_sqlite_files(path: str) -> None:
    """Create the SQLite file 0600 if absent; tighten it and its WAL/SHM files to 0600 if they exist."""
    if not os.path.exists(path):
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_MODE))
    for name in (path, f"{path}-wal", f"{path}-shm"):
        try:
            mode = stat.S_IMODE(os.stat(name).st_mode)
        except FileNotFoundError:
            continue
        if mode & 0o077:
            os.chmod(name, PRIVATE_MODE)


class Database:
    """An engine plus the write discipline: ``with db.write() as conn`` is one serialised transaction.

    Opening checks the file (SQLite ``quick_check``) and creates or migrates the schema; any failure
    is a ``DatabaseError`` that names the file and what to do."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database in (None, "", ":memory:"):
            raise ValueError(f"SQLite needs a file path (sqlite:///state.db), found {url!r}: memory is not durable")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            old_umask = os.umask(0o077)  # SQLite creates -wal/-shm itself; keep them private too
            self._restore_umask: int | None = old_umask
            _private_sqlite_files(str(parsed.database))
        else:
            self._restore_umask = None
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._write_lock = threading.Lock()
        try:
            self._open()
        except SQLAlchemyError as exc:
            self.engine.dispose()
            raise DatabaseError(
                f"the database {url} cannot be opened ({type(exc.orig if hasattr(exc, 'orig') else exc).__name__}: "
                f"{str(exc).splitlines()[0][:200]}); restore it from a backup or point --db at a new file"
            ) from exc
        finally:
            if self._restore_umask is not None:
                os.umask(self._restore_umask)

    def _open(self) -> None:
        if self.is_sqlite:
            with self.engine.connect() as conn:
                found = [str(row[0]) for row in conn.exec_driver_sql("PRAGMA quick_check").all()]
            if found != ["ok"]:
                raise DatabaseError(
                    f"the database {self.url} is damaged (SQLite quick_check: {'; '.join(found)[:300]}); "
                    "restore it from a backup or point --db at a new file"
                )
        with self.engine.begin() as conn:
            migrate(conn)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction, committed on exit (rolled back on an exception)."""
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (a consistent snapshot)."""
        with self.engine.begin() as conn:
            yield conn

    def close(self) -> None:
        self.engine.dispose()


def _schema_version(conn: Connection) -> int | None:
    if not inspect(conn).has_table("meta"):
        return None
    value = conn.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar_one_or_none()
    return None if value is None else int(value)


def migrate(conn: Connection) -> None:
    """Create the schema, or bring a schema-1 database to 2 in this transaction.

    1 → 2: refusals become counters (the per-refusal rows, which held raw device-id headers, are
    summed and dropped); updates lose ``num_examples``; versions gain ``files_json``. Device
    secrets are sealed by the service, which holds the key (``Aggregator._seal_plain_secrets``)."""
    version = _schema_version(conn)
    if version is not None and version > SCHEMA_VERSION:
        raise DatabaseError(f"the database has schema {version}; this privtune reads up to {SCHEMA_VERSION}")
    metadata.create_all(conn)
    if version != 1:
        return
    names = inspect(conn).get_table_names()
    if "rejections" in names:
        conn.execute(
            text(
                "INSERT INTO rejection_counts (reason, status, count, last_at) "
                "SELECT reason, status, COUNT(*), MAX(at) FROM rejections GROUP BY reason, status"
            )
        )
        conn.execute(text("DROP TABLE rejections"))
    if "num_examples" in {c["name"] for c in inspect(conn).get_columns("updates")}:
        conn.execute(text("ALTER TABLE updates DROP COLUMN num_examples"))
    if "files_json" not in {c["name"] for c in inspect(conn).get_columns("versions")}:
        conn.execute(text("ALTER TABLE versions ADD COLUMN files_json TEXT"))
    conn.execute(text("UPDATE meta SET value = :v WHERE key = 'schema_version'"), {"v": str(SCHEMA_VERSION)})
