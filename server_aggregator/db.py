"""The aggregator's tables (SQLAlchemy Core) and engine setup: SQLite (WAL) by default, any URL by configuration.

Durability: SQLite runs in WAL mode with ``synchronous=FULL``, so a committed transaction
survives a kill -9 and a power cut; an update is acknowledged only after its transaction
commits. One server process per SQLite file: writes are serialised by an in-process lock
(``Database.write``). Other databases (PostgreSQL: ``postgresql+psycopg://...``) are used
through the same portable SQL; their own transactions and unique constraints do the work.

Append-only by construction: no code path updates or deletes ``ledger`` or ``updates`` rows.
"""

from __future__ import annotations

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
)
from sqlalchemy.engine import make_url

SCHEMA_VERSION = 1

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
    Column("num_examples", Integer, nullable=False),
    Column("l2_norm", Float, nullable=False),
    Column("accepted_at", Float, nullable=False),
)

rejections = Table(
    "rejections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("reason", String(32), nullable=False, index=True),
    Column("status", Integer, nullable=False),
    Column("round_id", Integer, nullable=True),
    Column("device_id", String(128), nullable=True),
    Column("at", Float, nullable=False),
)

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
)


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


class Database:
    """An engine plus the write discipline: ``with db.write() as conn`` is one serialised transaction."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        self.url = url
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite and parsed.database in (None, "", ":memory:"):
            raise ValueError(f"SQLite needs a file path (sqlite:///state.db), found {url!r}: memory is not durable")
        kwargs: dict[str, Any] = {}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
            event.listen(self.engine, "begin", _sqlite_begin)
        self._write_lock = threading.Lock()
        metadata.create_all(self.engine)

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
