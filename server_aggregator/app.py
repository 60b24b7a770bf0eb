"""The HTTP face of the aggregator (FastAPI; OpenAPI schema at ``/openapi.json``).

Device endpoints are authenticated with ``ondevice.auth`` (HMAC-SHA256 over method, raw path,
body hash, timestamp, nonce; a query string is refused because it would not be signed); admin
endpoints with ``Authorization: Bearer <admin token>``. Every refusal is a 4xx JSON body with a
reason code (``ErrorBody`` for device requests; ``{"error": ...}`` for operator requests) and is
counted per reason; an unexpected failure is logged and answered 500 without details.

Nothing is read from a client before it is authenticated: an admin body only after the token
matches (≤ ``ADMIN_BODY_BYTES``); an upload body only after its signature (over the declared
body sha256), the round and the device's selection pass, and then at most the round's exact
update size. Header sizes are capped by the HTTP layer (``server.py``).
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import FastAPI, Header, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool

from ondevice.protocol import RejectionReason, sha256_hex
from ondevice.upload import CONTENT_TYPE, IDEMPOTENCY_HEADER, UPDATE_MAC_HEADER
from server_aggregator.http_guard import HeaderCap
from server_aggregator.service import Aggregator, ServiceError, jsonable
from server_aggregator.validation import Rejection

log = logging.getLogger("privtune.server")

PARAMS_SHA_HEADER = "X-Privtune-Params-Sha256"
_OCTET_BODY = {
    "requestBody": {
        "required": True,
        "content": {CONTENT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
    }
}


MAX_ID = 2**31 - 1  # round ids and versions fit a 32-bit SQL INTEGER on every backend
RoundId = Annotated[int, Path(ge=0, le=MAX_ID)]
Version = Annotated[int, Path(ge=0, le=MAX_ID)]
DeviceId = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")]


ADMIN_BODY_BYTES = 4096
CHECKIN_BODY_BYTES = 4096


class EnrollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    device_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class OpenRoundRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    duration_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    target_updates: int | None = Field(default=None, ge=1, le=10_000_000)


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": False, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def _error(rejection: Rejection) -> JSONResponse:
    return JSONResponse(rejection.error_body().to_dict(), status_code=rejection.status)


def _operator_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limit: int, *, required: bool = True) -> bytes:
    """The request body, refusing a missing length (411; absent counts as empty unless ``required``)
    and anything over ``limit`` (413) before reading it."""
    length = request.headers.get("content-length")
    if length is None and not required and "transfer-encoding" not in request.headers:
        return b""
    if length is None or not length.isascii() or not length.isdigit() or len(length) > 12:
        raise Rejection(411, RejectionReason.MALFORMED, "Content-Length required")
    if int(length) > limit:
        raise Rejection(413, RejectionReason.TOO_LARGE, f"body of {length} bytes is over the cap of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejection(413, RejectionReason.TOO_LARGE, f"body is over the cap of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _signed_path(request: Request) -> str:
    if request.scope.get("query_string"):
        raise Rejection(400, RejectionReason.MALFORMED, "device requests must not carry a query string")
    raw = request.scope.get("raw_path") or request.url.path.encode()
    try:
        return bytes(raw).decode("ascii")
    except UnicodeDecodeError as exc:
        raise Rejection(400, RejectionReason.MALFORMED, "request path is not ASCII") from exc


def create_app(service: Aggregator, *, run_closer: bool = True) -> FastAPI:
    """The FastAPI app over ``service``; ``run_closer`` starts the thread that closes due rounds."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = None
        if run_closer:
            thread = threading.Thread(target=_closer, args=(service, stop), name="round-closer", daemon=True)
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread is not None:
                thread.join()

    app = FastAPI(
        title="privtune aggregator",
        version="1",
        description="User-level DP-FedAvg over LoRA adapter updates from phones.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.add_middleware(HeaderCap)

    @app.exception_handler(OperationalError)
    async def storage_unavailable(_: Request, exc: OperationalError) -> JSONResponse:
        """A full disk or a locked/unreachable database: 503 + Retry-After (devices retry; nothing was stored)."""
        log.error("storage unavailable: %s", str(exc).splitlines()[0][:300])
        return JSONResponse(
            {"error": "the server cannot write its database right now; retry later"},
            status_code=503,
            headers={"Retry-After": "30"},
        )

    def refuse(rejection: Rejection) -> JSONResponse:
        service.record_rejection(rejection)
        return _error(rejection)

    async def device_call(request: Request, body_limit: int, action: Callable[[str], Any]) -> Any:
        """Read a small body (≤ ``body_limit``), authenticate, run ``action(device_id)`` in the thread pool."""
        try:
            body = await _read_body(request, body_limit) if body_limit else b""
            path = _signed_path(request)
            device_id = await run_in_threadpool(service.authenticate, request.method, path, body, request.headers)
            return await run_in_threadpool(action, device_id)
        except Rejection as rejection:
            return refuse(rejection)

    def admin_ok(authorization: str | None) -> bool:
        expected = f"Bearer {service.config.admin_token}".encode()
        return authorization is not None and hmac.compare_digest(authorization.encode("utf-8", "replace"), expected)

    async def admin_call(request: Request, action: Callable[[Any], Any], model: type[BaseModel] | None = None) -> Any:
        """Check the token, then (only then) read ≤ ``ADMIN_BODY_BYTES`` and validate it as ``model``."""
        if not admin_ok(request.headers.get("authorization")):
            return _operator_error(401, "admin endpoints need 'Authorization: Bearer <admin token>'")
        payload = None
        if model is not None:
            try:
                body = await _read_body(request, ADMIN_BODY_BYTES, required=False)
            except Rejection as rejection:
                return _operator_error(rejection.status, rejection.message)
            try:
                payload = model.model_validate_json(body) if body.strip() not in (b"", b"null") else model()
            except ValidationError as exc:
                return _operator_error(422, f"invalid request body: {exc.errors(include_url=False)[:3]}")
        try:
            return await run_in_threadpool(action, payload)
        except ServiceError as exc:
            return _operator_error(exc.status, exc.message)

    # ------------------------------------------------------------------ public

    @app.get("/v1/health", tags=["public"], responses={503: {}})
    async def health() -> Any:
        """Liveness and a database read; 503 when the database does not answer."""
        if not await run_in_threadpool(service.health):
            return JSONResponse({"status": "unavailable", "manifest_hash": service.manifest_hash}, status_code=503)
        return {"status": "ok", "manifest_hash": service.manifest_hash}

    # ------------------------------------------------------------------ devices

    @app.post("/v1/checkin", tags=["device"], responses={401: {}, 400: {}})
    async def checkin(request: Request) -> Any:
        """Ask for the open round; the answer says whether this device was selected (once, with probability q)."""
        return await device_call(request, CHECKIN_BODY_BYTES, lambda device_id: service.check_in(device_id).to_dict())

    @app.get("/v1/adapters/{version}", tags=["device"], responses={401: {}, 404: {}})
    async def adapter(version: Version, request: Request) -> Any:
        """A published global adapter version: safetensors of the trainable tensors (float32)."""

        def fetch(_: str) -> Any:
            try:
                blob = service.adapter_blob(version)
            except ServiceError as exc:
                return _operator_error(exc.status, exc.message)
            return Response(blob, media_type=CONTENT_TYPE, headers={PARAMS_SHA_HEADER: sha256_hex(blob)})

        if request.headers.get("content-length") not in (None, "0"):
            return refuse(Rejection(400, RejectionReason.MALFORMED, "GET requests carry no body"))
        return await device_call(request, 0, fetch)

    @app.post(
        "/v1/rounds/{round_id}/updates",
        tags=["device"],
        status_code=201,
        openapi_extra=_OCTET_BODY,
        responses={200: {}, 400: {}, 401: {}, 403: {}, 409: {}, 411: {}, 413: {}, 415: {}},
    )
    async def upload(
        round_id: RoundId,
        request: Request,
        update_mac: Annotated[str, Header(alias=UPDATE_MAC_HEADER)] = "",
        idempotency_key: Annotated[str, Header(alias=IDEMPOTENCY_HEADER)] = "",
    ) -> Any:
        """Upload one update (``encode_update`` bytes): 201 first time, 200 + the same receipt for the same bytes.

        Signature, round and selection are checked from the headers (the signature covers the
        Idempotency-Key, the body's sha256) before one byte of the body is read; the body is then
        capped at the round's exact update size and must hash to that key."""
        try:
            if request.headers.get("content-type") != CONTENT_TYPE:
                raise Rejection(415, RejectionReason.MALFORMED, f"Content-Type must be {CONTENT_TYPE}")
            path = _signed_path(request)
            auth = await run_in_threadpool(
                service.authorize_upload, round_id, request.method, path, request.headers, idempotency_key
            )
            limit = min(service.config.max_body_bytes, await run_in_threadpool(service.upload_body_limit, round_id))
            body = await _read_body(request, limit)
            receipt, created = await run_in_threadpool(
                service.ingest_update, round_id, auth, idempotency_key, body, update_mac
            )
            return JSONResponse(receipt.to_dict(), status_code=201 if created else 200)
        except Rejection as rejection:
            return refuse(rejection)

    # ------------------------------------------------------------------ operator

    @app.post(
        "/v1/admin/devices",
        tags=["admin"],
        status_code=201,
        responses={401: {}, 409: {}, 413: {}, 422: {}},
        openapi_extra=_json_body(EnrollRequest),
    )
    async def enroll(request: Request) -> Any:
        """Enroll a device: its id and 256-bit secret (hex). The secret is shown once."""

        def run(payload: EnrollRequest) -> Any:
            enrollment = service.enroll(payload.device_id)
            return JSONResponse({"device_id": enrollment.device_id, "secret": enrollment.secret.hex()}, status_code=201)

        return await admin_call(request, run, EnrollRequest)

    @app.post("/v1/admin/devices/{device_id}/revoke", tags=["admin"], responses={401: {}, 404: {}})
    async def revoke(device_id: DeviceId, request: Request) -> Any:
        """Revoke a device at once; its update in a round not yet aggregated is dropped."""

        def run(_: Any) -> Any:
            dropped = service.revoke(device_id)
            return {"device_id": device_id, "revoked": True, "pending_updates_dropped": dropped}

        return await admin_call(request, run)

    @app.post(
        "/v1/admin/rounds",
        tags=["admin"],
        status_code=201,
        responses={401: {}, 409: {}, 413: {}, 422: {}},
        openapi_extra=_json_body(OpenRoundRequest),
    )
    async def open_round(request: Request) -> Any:
        """Open the next round (refused with the numbers if it would exceed the ε budget)."""

        def run(payload: OpenRoundRequest) -> Any:
            config = service.open_round(duration_s=payload.duration_s, target_updates=payload.target_updates)
            return JSONResponse(config.to_dict(), status_code=201)

        return await admin_call(request, run, OpenRoundRequest)

    @app.post("/v1/admin/rounds/{round_id}/close", tags=["admin"], responses={401: {}, 404: {}})
    async def close_round(round_id: RoundId, request: Request) -> Any:
        """Close, aggregate and publish a round (idempotent)."""
        return await admin_call(request, lambda _: jsonable(service.close_round(round_id)))

    @app.get("/v1/status", tags=["admin"], responses={401: {}})
    async def status(request: Request) -> Any:
        """Rounds, ε spent and left (PLD and RDP, with and without amplification), rejections by reason, versions.

        Operator-only: the exact per-round counts here are not covered by the DP guarantee and
        are never sent to devices or written to a published version."""
        return await admin_call(request, lambda _: jsonable(service.status()))

    return app


def _closer(service: Aggregator, stop: threading.Event) -> None:
    """Close rounds whose deadline passed or whose target count is reached."""
    while not stop.wait(service.config.close_poll_s):
        try:
            closed = service.tick()
            if closed is not None:
                log.info("closed and published round %d", closed)
        except Exception:  # keep the closer alive; the round is resumed on the next tick
            log.exception("closing a round failed; retrying on the next tick")
