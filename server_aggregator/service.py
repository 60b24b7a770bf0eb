"""The aggregator's behaviour, independent of HTTP: devices, rounds, ingest, close → aggregate → publish.

Round life cycle (one round active at a time)::

    open ──(deadline / target count / operator)──► closed ──► aggregated ──► published

* ``open``: the budget check runs first (the projected ε after this round must fit); devices
  check in and each is selected once, with probability q, by a coin from the secure source,
  stored before the answer (asking again returns the same decision, so retrying cannot raise
  a device's chance). Updates are validated, then stored in one transaction with the request's
  nonce; the 201 is sent only after it commits.
* ``closed``: the set of updates is final. Aggregation draws the DP noise and, in ONE
  transaction, appends the round's ledger event, stores the new adapter version and marks the
  round ``aggregated``. A crash before that commit released nothing, so the redo draws fresh
  noise; after it, the stored tensors are re-published, never re-noised.
* ``published``: the version folder is on disk (atomic rename) and marked published.

``close_round`` and ``resume`` finish whatever stage a round is in, so both are idempotent.
"""

from __future__ import annotations

import json
import logging
import math
import re
import secrets
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, Row

from ondevice.auth import AuthError, AuthHeaders, HeaderItems, parse_auth_headers, validate_device_id, verify_request
from ondevice.bundle import verify_bundle
from ondevice.protocol import (
    MAX_UPDATE_HEADER_BYTES,
    RejectionReason,
    RoundConfig,
    UpdateReceipt,
    decode_update,
    sha256_hex,
    verify_update_mac,
)
from ondevice.randomness import RandomSource, SecureRandomSource
from ondevice.seed_methods import expand_from_rank
from server_aggregator import sealing, store
from server_aggregator.accountant import BudgetExceeded, RoundEvent, ServerAccountant
from server_aggregator.aggregation import ClientDelta, DpAdaptiveClipping, DpAggregate, DpFixedClipping, apply_delta
from server_aggregator.config import TARGET_UPDATES_UNDER_DP, ServerConfig
from server_aggregator.db import SCHEMA_VERSION, Database
from server_aggregator.publish import Publisher, bundle_adapter, decode_params, encode_params, params_sha256
from server_aggregator.validation import Rejection, RoundTerms, check_update, parse_update

SECRET_BYTES = 32
NONCE_PURGE_S = 60.0
RETENTION_SWEEP_S = 60.0
REJECTION_LOG_EVERY_S = 10.0
"""At most one log line per refusal reason in this time (the rest are counted, and the count logged)."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_DTYPE_BYTES = {"float32": 4, "float16": 2}
log = logging.getLogger("privtune.server")


class _UnknownDevice(Rejection):
    """Answered exactly like a bad signature (ids cannot be enumerated), counted as ``unknown_device``."""

    counted_reason = RejectionReason.UNKNOWN_DEVICE


class ServiceError(RuntimeError):
    """An operator request that cannot be honoured (HTTP 409 / 404 with this message)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Enrollment:
    device_id: str
    secret: bytes


@dataclass(frozen=True)
class CheckIn:
    """A device's answer: the open round (if any) and whether it was selected for it."""

    round_config: RoundConfig | None
    selected: bool
    open_round_id: int | None = None
    """The open round's id, also for a device that was not selected (None: no round is open)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "round": None if self.round_config is None else self.round_config.to_dict(),
            "selected": self.selected,
            "open_round_id": self.open_round_id,
        }


class Aggregator:
    """One aggregator over one database; thread-safe (FastAPI runs sync handlers in a pool)."""

    def __init__(
        self,
        config: ServerConfig,
        *,
        random_source: RandomSource | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self.random = random_source if random_source is not None else SecureRandomSource()
        self.manifest = verify_bundle(config.bundle_dir)
        weights = config.local_dp.class_weights
        if weights is not None and len(weights) != len(self.manifest.labels):
            raise ValueError(
                f"local_dp.class_weights gives {len(weights)} weights; the bundle has labels "
                f"{list(self.manifest.labels)} (give one weight per label: serve --class-weights)"
            )
        self.manifest_hash = self.manifest.manifest_hash()
        self.publisher = Publisher(config.adapter_dir, config.publish_dir, self.manifest)
        self.accountant = ServerAccountant(
            delta=config.delta, epsilon_budget=config.epsilon_budget, enforce=config.budget_mode
        )
        self.db = Database(config.db_url)
        self._close_lock = threading.Lock()
        self._round_terms: dict[int, RoundTerms] = {}
        self._next_nonce_purge = float("-inf")
        self._next_retention_sweep = float("-inf")
        self._dummy_secret = secrets.token_bytes(SECRET_BYTES)  # verifies nothing: unknown ids look like bad MACs
        self._rejection_lock = threading.Lock()
        self._pending_rejections: dict[tuple[str, int], tuple[int, float]] = {}
        self._rejection_log: dict[str, tuple[float, int]] = {}
        self._check_base_matches_bundle()
        self._init_state()
        self.resume()

    def _check_base_matches_bundle(self) -> None:
        """Version 0 must be what the devices' bundle holds: refuse a classifier folder with other weights."""
        base = self.publisher.base_params()
        exported = bundle_adapter(self.config.bundle_dir, self.manifest)
        worst = max(float(np.max(np.abs(base[k] - exported[k]))) for k in exported)
        if worst > 1e-6:
            raise ServiceError(
                409,
                f"{self.config.adapter_dir} holds other adapter weights than the bundle {self.config.bundle_dir} "
                f"(max |difference| {worst:.3g}); pass the classifier folder the bundle was exported from",
            )

    # ------------------------------------------------------------------ start-up

    def _init_state(self) -> None:
        """First start: record the manifest and publish version 0. Later starts: refuse a different bundle."""
        now = self.clock()
        with self.db.write() as conn:
            known = store.get_meta(conn, "manifest_hash")
            if known is None:
                store.set_meta(conn, "schema_version", str(SCHEMA_VERSION))
                store.set_meta(conn, "manifest_hash", self.manifest_hash)
                store.set_meta(conn, "delta", repr(self.config.delta))
                store.set_meta(conn, "device_key_check", sealing.key_check(self.config.device_key))
                params = self.publisher.base_params()
                blob = encode_params({s.name: params[s.name] for s in self.manifest.trainable})
                store.insert_version(conn, 0, None, blob, sha256_hex(blob), now)
            elif known != self.manifest_hash:
                raise ServiceError(
                    409,
                    f"{self.config.db_url} belongs to bundle {known[:12]}…, not {self.manifest_hash[:12]}…; "
                    "use a new database for a new bundle",
                )
            elif store.get_meta(conn, "delta") != repr(self.config.delta):
                raise ServiceError(
                    409,
                    f"this ledger is accounted at delta={store.get_meta(conn, 'delta')}, not {self.config.delta}; "
                    "the target delta cannot change mid-ledger",
                )
            self._check_device_key(conn)
        for path in self.publisher.remove_partials():
            log.warning("removed %s, a publish a crash interrupted", path)
        self._publish_pending()
        self._verify_published_versions()

    def _check_device_key(self, conn: Connection) -> None:
        """Refuse another device key than the one the secrets were sealed with; seal schema-1 plaintext secrets."""
        check = sealing.key_check(self.config.device_key)
        known = store.get_meta(conn, "device_key_check")
        if known is not None and not secrets.compare_digest(known, check):
            raise ServiceError(
                409,
                f"{self.config.db_url}: the device secrets were sealed under another device key; start with the "
                f"key file this database was created with (or {sealing.KEY_ENV})",
            )
        if known is None:
            store.set_meta(conn, "device_key_check", check)
        sealed = 0
        for device_id, blob in store.device_secrets(conn):
            if not sealing.is_sealed(blob):
                store.set_device_secret(conn, device_id, sealing.seal(self.config.device_key, device_id, blob))
                sealed += 1
        if sealed:
            log.warning("sealed %d plaintext device secrets of a schema-1 database under the device key", sealed)

    def _verify_published_versions(self) -> None:
        """Every published version: its stored tensors match their recorded sha256 (else refuse to start), and its
        folder matches the recorded file hashes (else it is re-written from the database)."""
        with self.db.read() as conn:
            rows = store.published_versions(conn)
        for row in rows:
            version = int(row.version)
            with self.db.read() as conn:
                stored = store.get_version(conn, version)
            if stored is None or sha256_hex(bytes(stored.params)) != row.sha256:
                raise ServiceError(
                    500,
                    f"{self.config.db_url}: adapter version {version} is damaged in the database (its tensors no "
                    "longer match their recorded sha256); restore the database from a backup",
                )
            if row.files_json is None:
                self._record_files(version)
                continue
            damaged = self.publisher.damaged_files(version, json.loads(row.files_json))
            if damaged:
                log.warning("published version %d is damaged on disk (%s); re-writing it", version, damaged[:3])
                folder = self.publisher.version_dir(version)
                if folder.exists():
                    shutil.rmtree(folder)
                params = decode_params(bytes(stored.params), self.manifest.trainable)
                self.publisher.publish(version, row.round_id, params)
                if self.publisher.damaged_files(version, json.loads(row.files_json)):
                    raise ServiceError(500, f"published version {version} cannot be re-written identically")

    def _record_files(self, version: int) -> None:
        with self.db.write() as conn:
            store.set_version_files(conn, version, json.dumps(self.publisher.file_hashes(version), sort_keys=True))

    def _publish_pending(self) -> None:
        with self.db.read() as conn:
            row = store.get_version(conn, 0)
        if row is not None and row.published_at is None:
            self.publisher.publish(0, None, decode_params(bytes(row.params), self.manifest.trainable))
            with self.db.write() as conn:
                store.mark_version_published(conn, 0, self.clock())
            self._record_files(0)

    def resume(self) -> None:
        """Finish any round left closed or aggregated by a crash."""
        with self.db.read() as conn:
            row = store.active_round(conn)
        if row is not None and row.state in ("closed", "aggregated"):
            self.close_round(int(row.round_id))

    # ------------------------------------------------------------------ devices

    def enroll(self, device_id: str | None = None) -> Enrollment:
        """A new device id (random unless given) and its 256-bit secret (stored sealed under the device key)."""
        device_id = validate_device_id(device_id) if device_id is not None else f"dev-{secrets.token_hex(8)}"
        secret = secrets.token_bytes(SECRET_BYTES)
        with self.db.write() as conn:
            sealed = sealing.seal(self.config.device_key, device_id, secret)
            if not store.insert_device(conn, device_id, sealed, self.clock()):
                raise ServiceError(409, f"device {device_id!r} is already enrolled")
        return Enrollment(device_id, secret)

    def revoke(self, device_id: str) -> int:
        """Revoke at once (every later request is refused) and drop the device's update in a round not yet
        aggregated; returns how many updates were dropped. Serialised with aggregation."""
        with self._close_lock, self.db.write() as conn:
            if not store.revoke_device(conn, device_id, self.clock()):
                raise ServiceError(404, f"no device {device_id!r}")
            return store.delete_pending_updates(conn, device_id)

    def _device(self, conn: Connection, device_id: str) -> tuple[bytes, bool] | None:
        """(secret, revoked) of an enrolled device, read now (no cache: revocation takes effect at once)."""
        found = store.get_device(conn, device_id)
        if found is None:
            return None
        try:
            secret = sealing.unseal(self.config.device_key, device_id, found.secret)
        except sealing.SealError as exc:
            log.error("%s", exc)
            return None
        return secret, found.revoked_at is not None

    def _verify(
        self, method: str, path: str, body: bytes, headers: HeaderItems, body_sha256: str | None = None
    ) -> AuthHeaders:
        """Signature and timestamp of a device request (the nonce is recorded by the caller's transaction).

        An unknown id is verified against a random secret, so it fails exactly like a bad signature;
        a revoked device is told so only after its signature verifies."""
        device = None
        try:
            device_id = parse_auth_headers(headers).device_id
            with self.db.read() as conn:
                device = self._device(conn, device_id)
            auth = verify_request(
                device[0] if device is not None else self._dummy_secret,
                method,
                path,
                body,
                headers,
                now=self.clock(),
                max_skew_s=self.config.max_skew_s,
                body_sha256=body_sha256,
            )
        except AuthError as exc:
            status = 400 if exc.reason is RejectionReason.MALFORMED else 401
            if exc.reason is RejectionReason.BAD_SIGNATURE and device is None:
                raise _UnknownDevice(status, exc.reason, exc.message) from exc
            raise Rejection(status, exc.reason, exc.message) from exc
        if device is None:  # pragma: no cover - a random 256-bit secret does not verify
            raise _UnknownDevice(401, RejectionReason.BAD_SIGNATURE, "request signature does not verify")
        if device[1]:
            raise Rejection(401, RejectionReason.REVOKED_DEVICE, f"device {device_id!r} was revoked")
        return auth

    def _remember_nonce(self, conn: Connection, auth: AuthHeaders) -> None:
        now = self.clock()
        purge = now >= self._next_nonce_purge
        if purge:
            self._next_nonce_purge = now + NONCE_PURGE_S
        expires = auth.timestamp + self.config.max_skew_s
        if not store.remember_nonce(conn, auth.device_id, auth.nonce, expires, now, purge=purge):
            raise Rejection(401, RejectionReason.REPLAYED_NONCE, f"nonce {auth.nonce} was already used")

    def authenticate(self, method: str, path: str, body: bytes, headers: HeaderItems) -> str:
        """Verify a device request's signature, timestamp and nonce; return its device id.

        The nonce is committed before this returns, so a replay is refused even after a restart.
        """
        auth = self._verify(method, path, body, headers)
        with self.db.write() as conn:
            self._remember_nonce(conn, auth)
        return auth.device_id

    def record_rejection(self, rejection: Rejection) -> None:
        """Count a refusal in memory (flushed to the counters table by ``flush_rejections``) and log a sample.

        Nothing a client sent is stored: abuse costs a dictionary increment, never a database row."""
        reason = getattr(rejection, "counted_reason", rejection.reason).value
        now = self.clock()
        with self._rejection_lock:
            count, _ = self._pending_rejections.get((reason, rejection.status), (0, now))
            self._pending_rejections[(reason, rejection.status)] = (count + 1, now)
            last_logged, suppressed = self._rejection_log.get(reason, (float("-inf"), 0))
            if now - last_logged >= REJECTION_LOG_EVERY_S:
                self._rejection_log[reason] = (now, 0)
                log.info(
                    "refused %d %s: %s (+%d more since the last line)",
                    rejection.status,
                    reason,
                    rejection.message[:200],
                    suppressed,
                )
            else:
                self._rejection_log[reason] = (last_logged, suppressed + 1)

    def flush_rejections(self) -> None:
        """Add the in-memory refusal counts to the database (kept in memory if the write fails)."""
        with self._rejection_lock:
            pending, self._pending_rejections = self._pending_rejections, {}
        if not pending:
            return
        try:
            with self.db.write() as conn:
                store.add_rejection_counts(conn, pending)
        except Exception:
            with self._rejection_lock:
                for key, (count, at) in pending.items():
                    old, _ = self._pending_rejections.get(key, (0, at))
                    self._pending_rejections[key] = (old + count, at)
            raise

    def health(self) -> bool:
        """True if the database answers a read (what ``/v1/health`` reports)."""
        try:
            with self.db.read() as conn:
                return store.get_meta(conn, "manifest_hash") == self.manifest_hash
        except Exception:
            log.exception("health check: the database does not answer")
            return False

    # ------------------------------------------------------------------ rounds

    def _round_config(self, row: Row[Any]) -> RoundConfig:
        return RoundConfig.from_json(row.config_json)

    def _events(self, conn: Connection) -> list[RoundEvent]:
        return [RoundEvent.from_json(row.event_json) for row in store.ledger_rows(conn)]

    def open_round(self, *, duration_s: float | None = None, target_updates: int | None = None) -> RoundConfig:
        """Open the next round after the budget check; ``ServiceError`` (409) if it cannot open."""
        now = self.clock()
        duration = self.config.round_duration_s if duration_s is None else duration_s
        if not (duration > 0 and math.isfinite(duration)):
            raise ServiceError(422, f"duration_s must be a finite number > 0, found {duration!r}")
        target = self.config.target_updates if target_updates is None else target_updates
        if target is not None and self.config.noise_multiplier > 0:
            raise ServiceError(422, TARGET_UPDATES_UNDER_DP)
        with self.db.write() as conn:
            active = store.active_round(conn)
            if active is not None:
                raise ServiceError(409, f"round {active.round_id} is still {active.state}; close it first")
            population, _ = store.count_devices(conn)
            if population == 0:
                raise ServiceError(409, "no enrolled devices; enroll devices before opening a round")
            round_id = store.next_round_id(conn)
            q = min(1.0, self.config.clients_per_round / population)
            event = RoundEvent(round_id=round_id, sampling_rate=q, noise_multiplier=self.config.noise_multiplier)
            try:
                self.accountant.check_open(self._events(conn), event)
            except BudgetExceeded as exc:
                raise ServiceError(409, str(exc)) from exc
            base_version = store.latest_published_version(conn)
            if base_version is None:
                raise ServiceError(409, "no published adapter version yet")
            config = RoundConfig(
                round_id=round_id,
                manifest_hash=self.manifest_hash,
                global_adapter_version=base_version,
                dp=self.config.local_dp,
                update_clip_norm=self._clip_norm(conn),
                deadline_unix=now + duration,
                update_dtype=self.config.update_dtype,
            )
            store.insert_round(
                conn,
                round_id=round_id,
                state="open",
                config_json=config.to_json(),
                base_version=base_version,
                population=population,
                sampling_rate=q,
                noise_multiplier=self.config.noise_multiplier,
                clip_norm=config.update_clip_norm,
                target_updates=target,
                opened_at=now,
                deadline_unix=config.deadline_unix,
            )
        return config

    def _clip_norm(self, conn: Connection) -> float:
        """S for the next round: fixed, or (adaptive clipping) the last aggregated round's C_{t+1}."""
        adaptive = self.config.adaptive_clipping
        if adaptive is None:
            return self.config.update_clip_norm
        for row in reversed(store.all_rounds(conn)):
            if row.summary_json is not None:
                return float(json.loads(row.summary_json)["next_clip_norm"])
        return adaptive.initial_clip_norm

    def check_in(self, device_id: str) -> CheckIn:
        """The open round and this device's (stored, once-drawn) Poisson selection."""
        now = self.clock()
        with self.db.write() as conn:
            row = store.active_round(conn)
            if row is None or row.state != "open" or now >= row.deadline_unix:
                return CheckIn(None, False)
            selected = store.get_selection(conn, row.round_id, device_id)
            if selected is None:
                selected = bool(self.random.uniform(1)[0] < row.sampling_rate)
                store.insert_selection(conn, row.round_id, device_id, selected, now)
            return CheckIn(self._round_config(row) if selected else None, selected, int(row.round_id))

    def _terms(self, round_id: int) -> RoundTerms:
        """A round's upload terms (immutable once the round exists, so cached)."""
        terms = self._round_terms.get(round_id)
        if terms is None:
            with self.db.read() as conn:
                row = store.get_round(conn, round_id)
            if row is None:
                raise Rejection(400, RejectionReason.WRONG_ROUND, f"round {round_id} does not exist")
            terms = RoundTerms.for_round(self._round_config(row), self.manifest.trainable, self.config.norm_slack)
            self._round_terms[round_id] = terms
        return terms

    def upload_body_limit(self, round_id: int) -> int:
        """The largest body an update for this round can have: its exact tensor bytes plus header room."""
        terms = self._terms(round_id)
        width = _DTYPE_BYTES[terms.config.update_dtype]
        return 8 + MAX_UPDATE_HEADER_BYTES + width * sum(math.prod(shape) for shape in terms.shapes.values())

    def authorize_upload(self, round_id: int, method: str, path: str, headers: HeaderItems, digest: str) -> AuthHeaders:
        """Everything an upload can be refused for before its body is read: signature (over the declared
        body sha256, the Idempotency-Key), timestamp, revocation, round open, device selected.

        A retry of an update already stored passes (it gets its receipt once the body matches)."""
        if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
            raise Rejection(400, RejectionReason.MALFORMED, "Idempotency-Key must be the sha256 of the body (64 hex)")
        auth = self._verify(method, path, b"", headers, body_sha256=digest)
        now = self.clock()
        with self.db.read() as conn:
            existing = store.get_update(conn, round_id, auth.device_id, with_body=False)
            if existing is not None and existing.sha256 == digest:
                return auth
            row = store.get_round(conn, round_id)
            if row is None:
                raise Rejection(400, RejectionReason.WRONG_ROUND, f"round {round_id} does not exist")
            if row.state != "open" or now >= row.deadline_unix:
                raise Rejection(409, RejectionReason.ROUND_NOT_OPEN, f"round {round_id} is not open")
            if store.get_selection(conn, round_id, auth.device_id) is not True:
                raise Rejection(
                    403,
                    RejectionReason.NOT_SELECTED,
                    f"device {auth.device_id!r} was not selected for round {round_id}",
                )
        return auth

    def ingest_update(
        self, round_id: int, auth: AuthHeaders, digest: str, body: bytes, update_mac: str
    ) -> tuple[UpdateReceipt, bool]:
        """Validate and durably store one upload that ``authorize_upload`` passed; (receipt, created).

        The body must hash to the signed digest; then ONE write transaction records the nonce,
        re-checks revocation, round state, selection and duplicates, and inserts the update. The
        caller answers only after it commits."""
        if sha256_hex(body) != digest:
            raise Rejection(
                401, RejectionReason.BAD_SIGNATURE, "the body does not match its signed sha256 (Idempotency-Key)"
            )
        return self._store_update(round_id, auth.device_id, body, update_mac, auth, digest)

    def submit_update(self, round_id: int, device_id: str, body: bytes, update_mac: str) -> tuple[UpdateReceipt, bool]:
        """``ingest_update`` for a device already authenticated in-process (no request signature or nonce)."""
        return self._store_update(round_id, device_id, body, update_mac, None, sha256_hex(body))

    def _store_update(
        self, round_id: int, device_id: str, body: bytes, update_mac: str, auth: AuthHeaders | None, digest: str
    ) -> tuple[UpdateReceipt, bool]:
        with self.db.read() as conn:
            device = self._device(conn, device_id)
        if device is None or not verify_update_mac(body, device[0], update_mac):
            raise Rejection(401, RejectionReason.BAD_SIGNATURE, "update MAC does not verify")
        update = parse_update(body)
        norm = check_update(update, self._terms(round_id), round_id=round_id, device_id=device_id)
        now = self.clock()
        with self.db.write() as conn:
            if auth is not None:
                self._remember_nonce(conn, auth)
            current = self._device(conn, device_id)
            if current is None or current[1]:
                raise Rejection(401, RejectionReason.REVOKED_DEVICE, f"device {device_id!r} was revoked")
            existing = store.get_update(conn, round_id, device_id, with_body=False)
            if existing is not None:
                if existing.sha256 == digest:
                    return UpdateReceipt(round_id, device_id, digest, existing.accepted_at), False
                raise Rejection(
                    409, RejectionReason.DUPLICATE_CONFLICT, f"round {round_id} already holds another update"
                )
            row = store.get_round(conn, round_id)
            if row is None or row.state != "open" or now >= row.deadline_unix:
                raise Rejection(409, RejectionReason.ROUND_NOT_OPEN, f"round {round_id} is not open")
            if store.get_selection(conn, round_id, device_id) is not True:
                raise Rejection(
                    403, RejectionReason.NOT_SELECTED, f"device {device_id!r} was not selected for round {round_id}"
                )
            target = row.target_updates
            if target is not None and store.count_updates(conn, round_id) >= target:
                raise Rejection(409, RejectionReason.ROUND_NOT_OPEN, f"round {round_id} has its {target} updates")
            store.insert_update(conn, store.StoredUpdate(round_id, device_id, digest, body, norm, now))
        return UpdateReceipt(round_id, device_id, digest, now), True

    def tick(self) -> int | None:
        """Close the open round if its deadline passed or its target count is reached; its id if closed.

        Also flushes the refusal counters and, once a minute, empties update bodies past retention."""
        now = self.clock()
        self.flush_rejections()
        if now >= self._next_retention_sweep:
            self._next_retention_sweep = now + RETENTION_SWEEP_S
            self.apply_retention()
        with self.db.read() as conn:
            row = store.active_round(conn)
            if row is None:
                return None
            due = row.state != "open" or now >= row.deadline_unix
            if not due and row.target_updates is not None:
                due = store.count_updates(conn, row.round_id) >= row.target_updates
        if not due:
            return None
        self.close_round(int(row.round_id))
        return int(row.round_id)

    def apply_retention(self) -> int:
        """Empty the bodies of updates whose round was published more than ``update_retention_s`` ago."""
        with self.db.write() as conn:
            return store.drop_published_update_bodies(conn, self.clock() - self.config.update_retention_s)

    def close_round(self, round_id: int) -> dict[str, Any]:
        """Close → aggregate → publish, from whatever stage the round is in; returns its summary."""
        with self._close_lock:
            with self.db.write() as conn:
                row = store.get_round(conn, round_id)
                if row is None:
                    raise ServiceError(404, f"no round {round_id}")
                if row.state == "open":
                    store.set_round(conn, round_id, state="closed", closed_at=self.clock())
            if row.state in ("open", "closed"):
                self._aggregate(round_id)
            self._publish(round_id)
            with self.db.read() as conn:
                final = store.get_round(conn, round_id)
            if final is None or final.summary_json is None:
                raise ServiceError(500, f"round {round_id} has no summary after publishing")
            summary: dict[str, Any] = json.loads(final.summary_json)
            return summary

    def _aggregate(self, round_id: int) -> None:
        specs = self.manifest.trainable
        with self.db.read() as conn:
            row = store.get_round(conn, round_id)
            base = store.get_version(conn, row.base_version) if row is not None else None
            if row is None or base is None or row.state != "closed":
                return
            count = store.count_updates(conn, round_id)
            # one stored update at a time: memory does not grow with the round's size
            deltas = (self._client_delta(record.body) for record in store.iter_round_updates(conn, round_id))
            result = self._dp_aggregate(row, deltas)
        if result.num_updates != count:
            raise ServiceError(500, f"round {round_id}: aggregated {result.num_updates} of {count} stored updates")
        global_params = decode_params(bytes(base.params), specs)
        new_params = apply_delta(global_params, result.mean_delta, self.config.server_learning_rate)
        blob = encode_params(new_params)
        event = RoundEvent(round_id=round_id, sampling_rate=row.sampling_rate, noise_multiplier=row.noise_multiplier)
        now = self.clock()
        with self.db.write() as conn:
            current = store.get_round(conn, round_id)
            if current is None or current.state != "closed":
                return
            version = int(row.base_version) + 1
            store.insert_ledger_event(conn, round_id, event.to_json(), event.sampling_rate, event.noise_multiplier, now)
            store.insert_version(conn, version, round_id, blob, sha256_hex(blob), now)
            summary = {
                "round_id": round_id,
                "updates": result.num_updates,
                "clipped": result.num_clipped,
                "expected_clients": row.sampling_rate * row.population,
                "noise_std_on_mean": result.noise_std_mean,
                "clip_norm": result.clip_norm,
                "next_clip_norm": result.next_clip_norm,
                "unclipped_fraction": result.unclipped_fraction,
                "base_version": int(row.base_version),
                "version": version,
                "params_sha256": params_sha256(new_params),
            }
            store.set_round(
                conn,
                round_id,
                state="aggregated",
                aggregated_at=now,
                result_version=version,
                summary_json=json.dumps(summary, sort_keys=True),
            )

    def _client_delta(self, body: bytes) -> ClientDelta:
        update = decode_update(body)
        tensors = {k: np.asarray(v, np.float64) for k, v in update.tensors.items()}
        return ClientDelta(expand_from_rank(tensors, self.manifest.trainable))

    def _dp_aggregate(self, row: Row[Any], deltas: Iterable[ClientDelta]) -> DpAggregate:
        shapes = {s.name: tuple(s.shape) for s in self.manifest.trainable}
        expected = row.sampling_rate * row.population
        adaptive = self.config.adaptive_clipping
        if adaptive is None:
            fixed = DpFixedClipping(
                clip_norm=row.clip_norm,
                noise_multiplier=row.noise_multiplier,
                expected_clients=expected,
                random_source=self.random,
            )
            return fixed.aggregate(deltas, shapes=shapes)
        mechanism = DpAdaptiveClipping(
            noise_multiplier=row.noise_multiplier,
            expected_clients=expected,
            adaptive=adaptive,
            random_source=self.random,
        )
        return mechanism.aggregate(deltas, shapes, clip_norm=row.clip_norm)

    def _publish(self, round_id: int) -> None:
        with self.db.read() as conn:
            row = store.get_round(conn, round_id)
            version = (
                store.get_version(conn, int(row.result_version))
                if row is not None and row.result_version is not None
                else None
            )
        if row is None or row.state != "aggregated" or version is None:
            return
        params = decode_params(bytes(version.params), self.manifest.trainable)
        self.publisher.publish(int(version.version), round_id, params)
        now = self.clock()
        with self.db.write() as conn:
            store.mark_version_published(conn, int(version.version), now)
            store.set_round(conn, round_id, state="published", published_at=now)
        self._record_files(int(version.version))

    # ------------------------------------------------------------------ reads

    def adapter_blob(self, version: int) -> bytes:
        """A published version's trainable tensors (``encode_params`` bytes)."""
        with self.db.read() as conn:
            row = store.get_version(conn, version)
        if row is None or row.published_at is None:
            raise ServiceError(404, f"adapter version {version} is not published")
        blob = bytes(row.params)
        if sha256_hex(blob) != row.sha256:
            log.error("adapter version %d is damaged in the database: not served", version)
            raise ServiceError(503, f"adapter version {version} failed its integrity check; the operator is told")
        return blob

    def adapter_params(self, version: int) -> dict[str, np.ndarray]:
        return decode_params(self.adapter_blob(version), self.manifest.trainable)

    def privacy(self) -> dict[str, Any]:
        with self.db.read() as conn:
            events = self._events(conn)
        return self.accountant.report(events).to_dict()

    def status(self) -> dict[str, Any]:
        """Rounds, ε spent and left, accepted/rejected counts by reason, published versions."""
        self.flush_rejections()
        with self.db.read() as conn:
            rows = store.all_rounds(conn)
            counts = store.update_counts(conn)
            rounds = []
            for row in rows:
                checked_in, selected = store.count_selections(conn, row.round_id)
                rounds.append(
                    {
                        "round_id": row.round_id,
                        "state": row.state,
                        "population": row.population,
                        "sampling_rate": row.sampling_rate,
                        "noise_multiplier": row.noise_multiplier,
                        "clip_norm": row.clip_norm,
                        "base_version": row.base_version,
                        "result_version": row.result_version,
                        "checked_in": checked_in,
                        "selected": selected,
                        "accepted": counts.get(int(row.round_id), 0),
                        "opened_at": row.opened_at,
                        "deadline_unix": row.deadline_unix,
                        "published_at": row.published_at,
                    }
                )
            rejections = store.rejection_counts(conn)
            versions = [
                {"version": v.version, "round_id": v.round_id, "sha256": v.sha256, "published_at": v.published_at}
                for v in store.published_versions(conn)
            ]
            active, revoked = store.count_devices(conn)
            events = self._events(conn)
        return {
            "manifest_hash": self.manifest_hash,
            "devices": {"active": active, "revoked": revoked},
            "rounds": rounds,
            "accepted_total": sum(counts.values()),
            "rejected_by_reason": rejections,
            "rejected_total": sum(rejections.values()),
            "published_versions": versions,
            "privacy": self.accountant.report(events).to_dict(),
        }

    def close(self) -> None:
        try:
            self.flush_rejections()
        except Exception:
            log.exception("the last refusal counts could not be written")
        self.db.close()


def jsonable(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Replace non-finite floats (ε = inf) by strings so the status is valid JSON."""

    def fix(value: Any) -> Any:
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [fix(v) for v in value]
        return value

    return {k: fix(v) for k, v in mapping.items()}
