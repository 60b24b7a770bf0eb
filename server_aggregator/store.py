"""Row-level reads and writes of the aggregator's tables (one function per question or change).

Every function takes an open ``Connection`` so callers compose them inside one transaction.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from server_aggregator import db

ACTIVE_STATES = ("open", "closed", "aggregated")
ROUND_STATES = (*ACTIVE_STATES, "published")


@dataclass(frozen=True)
class DeviceRecord:
    device_id: str
    secret: bytes
    enrolled_at: float
    revoked_at: float | None


@dataclass(frozen=True)
class StoredUpdate:
    round_id: int
    device_id: str
    sha256: str
    body: bytes
    l2_norm: float
    accepted_at: float


# --------------------------------------------------------------------------- meta


def get_meta(conn: Connection, key: str) -> str | None:
    value = conn.execute(select(db.meta.c.value).where(db.meta.c.key == key)).scalar_one_or_none()
    return None if value is None else str(value)


def set_meta(conn: Connection, key: str, value: str) -> None:
    if get_meta(conn, key) is None:
        conn.execute(insert(db.meta).values(key=key, value=value))
    else:
        conn.execute(update(db.meta).where(db.meta.c.key == key).values(value=value))


# --------------------------------------------------------------------------- devices + nonces


def insert_device(conn: Connection, device_id: str, secret: bytes, now: float) -> bool:
    """False if the id is taken."""
    try:
        with conn.begin_nested():
            conn.execute(insert(db.devices).values(device_id=device_id, secret=secret, enrolled_at=now))
    except IntegrityError:
        return False
    return True


def get_device(conn: Connection, device_id: str) -> DeviceRecord | None:
    row = conn.execute(select(db.devices).where(db.devices.c.device_id == device_id)).one_or_none()
    if row is None:
        return None
    return DeviceRecord(row.device_id, bytes(row.secret), row.enrolled_at, row.revoked_at)


def device_secrets(conn: Connection) -> list[tuple[str, bytes]]:
    """(device id, stored secret blob) of every device."""
    rows = conn.execute(select(db.devices.c.device_id, db.devices.c.secret).order_by(db.devices.c.device_id)).all()
    return [(str(r.device_id), bytes(r.secret)) for r in rows]


def set_device_secret(conn: Connection, device_id: str, blob: bytes) -> None:
    conn.execute(update(db.devices).where(db.devices.c.device_id == device_id).values(secret=blob))


def revoke_device(conn: Connection, device_id: str, now: float) -> bool:
    """False if no such device; revoking twice keeps the first time."""
    device = get_device(conn, device_id)
    if device is None:
        return False
    if device.revoked_at is None:
        conn.execute(update(db.devices).where(db.devices.c.device_id == device_id).values(revoked_at=now))
    return True


def count_devices(conn: Connection) -> tuple[int, int]:
    """(active, revoked) device counts."""
    total = conn.execute(select(func.count()).select_from(db.devices)).scalar_one()
    revoked = conn.execute(
        select(func.count()).select_from(db.devices).where(db.devices.c.revoked_at.is_not(None))
    ).scalar_one()
    return int(total) - int(revoked), int(revoked)


def remember_nonce(
    conn: Connection, device_id: str, nonce: str, expires_at: float, now: float, *, purge: bool = True
) -> bool:
    """Record a request nonce; False if this device already used it. ``purge`` first drops expired ones
    (a stale timestamp is refused before any nonce lookup, so an expired nonce can never be replayed)."""
    if purge:
        conn.execute(delete(db.nonces).where(db.nonces.c.expires_at < now))
    try:
        with conn.begin_nested():
            conn.execute(insert(db.nonces).values(device_id=device_id, nonce=nonce, expires_at=expires_at))
    except IntegrityError:
        return False
    return True


# --------------------------------------------------------------------------- rounds + selections


def insert_round(conn: Connection, **values: Any) -> None:
    conn.execute(insert(db.rounds).values(**values))


def get_round(conn: Connection, round_id: int) -> Row[Any] | None:
    return conn.execute(select(db.rounds).where(db.rounds.c.round_id == round_id)).one_or_none()


def active_round(conn: Connection) -> Row[Any] | None:
    """The round not yet published, if any (at most one exists)."""
    return conn.execute(
        select(db.rounds).where(db.rounds.c.state.in_(ACTIVE_STATES)).order_by(db.rounds.c.round_id)
    ).first()


def all_rounds(conn: Connection) -> Sequence[Row[Any]]:
    return conn.execute(select(db.rounds).order_by(db.rounds.c.round_id)).all()


def next_round_id(conn: Connection) -> int:
    top = conn.execute(select(func.max(db.rounds.c.round_id))).scalar_one_or_none()
    return 0 if top is None else int(top) + 1


def set_round(conn: Connection, round_id: int, **values: Any) -> None:
    conn.execute(update(db.rounds).where(db.rounds.c.round_id == round_id).values(**values))


def get_selection(conn: Connection, round_id: int, device_id: str) -> bool | None:
    value = conn.execute(
        select(db.selections.c.selected).where(
            db.selections.c.round_id == round_id, db.selections.c.device_id == device_id
        )
    ).scalar_one_or_none()
    return None if value is None else bool(value)


def insert_selection(conn: Connection, round_id: int, device_id: str, selected: bool, now: float) -> None:
    conn.execute(
        insert(db.selections).values(round_id=round_id, device_id=device_id, selected=selected, checked_in_at=now)
    )


def count_selections(conn: Connection, round_id: int) -> tuple[int, int]:
    """(checked in, selected) for a round."""
    rows = conn.execute(
        select(db.selections.c.selected, func.count())
        .where(db.selections.c.round_id == round_id)
        .group_by(db.selections.c.selected)
    ).all()
    counts = {bool(selected): int(n) for selected, n in rows}
    return counts.get(True, 0) + counts.get(False, 0), counts.get(True, 0)


# --------------------------------------------------------------------------- updates


def _update_record(row: Row[Any]) -> StoredUpdate:
    return StoredUpdate(row.round_id, row.device_id, row.sha256, bytes(row.body), row.l2_norm, row.accepted_at)


def get_update(conn: Connection, round_id: int, device_id: str, *, with_body: bool = True) -> StoredUpdate | None:
    columns = list(db.updates.c) if with_body else [c for c in db.updates.c if c.name != "body"]
    row = conn.execute(
        select(*columns).where(db.updates.c.round_id == round_id, db.updates.c.device_id == device_id)
    ).one_or_none()
    if row is None:
        return None
    body = bytes(row.body) if with_body else b""
    return StoredUpdate(row.round_id, row.device_id, row.sha256, body, row.l2_norm, row.accepted_at)


def insert_update(conn: Connection, record: StoredUpdate) -> None:
    conn.execute(
        insert(db.updates).values(
            round_id=record.round_id,
            device_id=record.device_id,
            sha256=record.sha256,
            body=record.body,
            l2_norm=record.l2_norm,
            accepted_at=record.accepted_at,
        )
    )


def round_updates(conn: Connection, round_id: int) -> list[StoredUpdate]:
    rows = conn.execute(
        select(db.updates).where(db.updates.c.round_id == round_id).order_by(db.updates.c.device_id)
    ).all()
    return [_update_record(row) for row in rows]


def iter_round_updates(conn: Connection, round_id: int) -> Iterator[StoredUpdate]:
    """A round's updates one at a time, in device order (rows fetched in small batches)."""
    result = conn.execution_options(yield_per=16).execute(
        select(db.updates).where(db.updates.c.round_id == round_id).order_by(db.updates.c.device_id)
    )
    for row in result:
        yield _update_record(row)


def count_updates(conn: Connection, round_id: int) -> int:
    return int(
        conn.execute(select(func.count()).select_from(db.updates).where(db.updates.c.round_id == round_id)).scalar_one()
    )


def update_counts(conn: Connection) -> dict[int, int]:
    rows = conn.execute(select(db.updates.c.round_id, func.count()).group_by(db.updates.c.round_id)).all()
    return {int(r): int(n) for r, n in rows}


def delete_pending_updates(conn: Connection, device_id: str) -> int:
    """Drop the device's updates in rounds not yet aggregated (revocation); the number dropped."""
    pending = select(db.rounds.c.round_id).where(db.rounds.c.state.in_(("open", "closed")))
    result = conn.execute(
        delete(db.updates).where(db.updates.c.device_id == device_id, db.updates.c.round_id.in_(pending))
    )
    return int(result.rowcount or 0)


def drop_published_update_bodies(conn: Connection, published_before: float) -> int:
    """Empty the bodies of updates whose round was published before ``published_before`` (retention).

    The digest and norm stay, so a late retry of the same bytes still gets its receipt."""
    done = select(db.rounds.c.round_id).where(
        db.rounds.c.state == "published", db.rounds.c.published_at < published_before
    )
    result = conn.execute(
        update(db.updates).where(db.updates.c.round_id.in_(done), func.length(db.updates.c.body) > 0).values(body=b"")
    )
    return int(result.rowcount or 0)


# --------------------------------------------------------------------------- rejections


def add_rejection_counts(conn: Connection, counts: dict[tuple[str, int], tuple[int, float]]) -> None:
    """Add ``{(reason, status): (count, last_at)}`` to the counters (one row per reason and status)."""
    table = db.rejection_counts
    for (reason, status), (count, last_at) in sorted(counts.items()):
        changed = conn.execute(
            update(table)
            .where(table.c.reason == reason, table.c.status == status)
            .values(count=table.c.count + count, last_at=func.max(table.c.last_at, last_at))
            if conn.dialect.name == "sqlite"
            else update(table)
            .where(table.c.reason == reason, table.c.status == status)
            .values(count=table.c.count + count, last_at=func.greatest(table.c.last_at, last_at))
        ).rowcount
        if not changed:
            conn.execute(insert(table).values(reason=reason, status=status, count=count, last_at=last_at))


def rejection_counts(conn: Connection) -> dict[str, int]:
    rows = conn.execute(
        select(db.rejection_counts.c.reason, func.sum(db.rejection_counts.c.count)).group_by(
            db.rejection_counts.c.reason
        )
    ).all()
    return {str(reason): int(n) for reason, n in sorted(rows)}


# --------------------------------------------------------------------------- ledger + versions


def insert_ledger_event(
    conn: Connection, round_id: int, event_json: str, sampling_rate: float, noise_multiplier: float, now: float
) -> None:
    conn.execute(
        insert(db.ledger).values(
            round_id=round_id,
            event_json=event_json,
            sampling_rate=sampling_rate,
            noise_multiplier=noise_multiplier,
            recorded_at=now,
        )
    )


def ledger_rows(conn: Connection) -> Sequence[Row[Any]]:
    return conn.execute(select(db.ledger).order_by(db.ledger.c.round_id)).all()


def insert_version(
    conn: Connection, version: int, round_id: int | None, params: bytes, sha256: str, now: float
) -> None:
    conn.execute(
        insert(db.versions).values(version=version, round_id=round_id, params=params, sha256=sha256, created_at=now)
    )


def get_version(conn: Connection, version: int) -> Row[Any] | None:
    return conn.execute(select(db.versions).where(db.versions.c.version == version)).one_or_none()


def latest_published_version(conn: Connection) -> int | None:
    value = conn.execute(
        select(func.max(db.versions.c.version)).where(db.versions.c.published_at.is_not(None))
    ).scalar_one_or_none()
    return None if value is None else int(value)


def set_version_files(conn: Connection, version: int, files_json: str) -> None:
    conn.execute(update(db.versions).where(db.versions.c.version == version).values(files_json=files_json))


def published_versions(conn: Connection) -> Sequence[Any]:
    return conn.execute(
        select(
            db.versions.c.version,
            db.versions.c.round_id,
            db.versions.c.sha256,
            db.versions.c.published_at,
            db.versions.c.files_json,
        )
        .where(db.versions.c.published_at.is_not(None))
        .order_by(db.versions.c.version)
    ).all()


def mark_version_published(conn: Connection, version: int, now: float) -> None:
    conn.execute(
        update(db.versions)
        .where(db.versions.c.version == version, db.versions.c.published_at.is_(None))
        .values(published_at=now)
    )
