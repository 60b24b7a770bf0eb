"""The HTTP face of the aggregator (FastAPI; OpenAPI schema at ``/openapi.json``).

Device endpoints are authenticated with ``ondevice.auth`` (HMAC-SHA256 over method, raw path,
body hash, timestamp, nonce; a query string is refused because it would not be signed); admin
endpoints with ``Authorization: Bearer <admin token>``. Every refusal is a 4xx JSON body with a
reason code (``ErrorBody`` for device requests; ``{"error": ...}`` for operator requests) and is
counted per reason; an unexpected failure is logged and answered 500 without details.
"""

from __future__ import annotations

import hmac
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Body, FastAPI, Header, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from ondevice.auth import HEADER_DEVICE
from ondevice.protocol import RejectionReason, sha256_hex
from ondevice.upload import CONTENT_TYPE, IDEMPOTENCY_HEADER, UPDATE_MAC_HEADER
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


class EnrollRequest(BaseModel):
    device_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")


class OpenRoundRequest(BaseModel):
    duration_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    target_updates: int | None = Field(default=None, ge=1, le=10_000_000)


def _error(rejection: Rejection) -> JSONResponse:
    return JSONResponse(rejection.error_body().to_dict(), status_code=rejection.status)


def _operator_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing a missing length (411) and anything over ``limit`` (413)."""
    length = request.headers.get("content-length")
    if length is None or not length.isdigit():
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

    async def device_call(request: Request, body: bytes, round_id: int | None, action: Callable[[str], Any]) -> Any:
        """Authenticate, run ``action(device_id)`` in the thread pool; count and map rejections."""
        device_id = request.headers.get(HEADER_DEVICE)
        try:
            path = _signed_path(request)
            device_id = await run_in_threadpool(service.authenticate, request.method, path, body, request.headers)
            return await run_in_threadpool(action, device_id)
        except Rejection as rejection:
            await run_in_threadpool(service.record_rejection, rejection, round_id, device_id)
            return _error(rejection)

    def admin_ok(authorization: str | None) -> bool:
        expected = f"Bearer {service.config.admin_token}"
        return authorization is not None and hmac.compare_digest(authorization.encode(), expected.encode())

    async def admin_call(authorization: str | None, action: Callable[[], Any]) -> Any:
        if not admin_ok(authorization):
            return _operator_error(401, "admin endpoints need 'Authorization: Bearer <admin token>'")
        try:
            return await run_in_threadpool(action)
        except ServiceError as exc:
            return _operator_error(exc.status, exc.message)

    # ------------------------------------------------------------------ public

    @app.get("/v1/health", tags=["public"])
    async def health() -> dict[str, str]:
        return {"status": "ok", "manifest_hash": service.manifest_hash}

    # ------------------------------------------------------------------ devices

    @app.post("/v1/checkin", tags=["device"], responses={401: {}, 400: {}})
    async def checkin(request: Request) -> Any:
        """Ask for the open round; the answer says whether this device was selected (once, with probability q)."""
        try:
            body = await _read_body(request, 4096)
        except Rejection as rejection:
            return _error(rejection)
        return await device_call(request, body, None, lambda device_id: service.check_in(device_id).to_dict())

    @app.get("/v1/adapters/{version}", tags=["device"], responses={401: {}, 404: {}})
    async def adapter(version: Version, request: Request) -> Any:
        """A published global adapter version: safetensors of the trainable tensors (float32)."""

        def fetch(_: str) -> Any:
            try:
                blob = service.adapter_blob(version)
            except ServiceError as exc:
                return _operator_error(exc.status, exc.message)
            return Response(blob, media_type=CONTENT_TYPE, headers={PARAMS_SHA_HEADER: sha256_hex(blob)})

        return await device_call(request, b"", None, fetch)

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
        """Upload one update (``encode_update`` bytes): 201 first time, 200 + the same receipt for the same bytes."""
        device_id = request.headers.get(HEADER_DEVICE)
        try:
            body = await _read_body(request, service.config.max_body_bytes)
            if request.headers.get("content-type") != CONTENT_TYPE:
                raise Rejection(415, RejectionReason.MALFORMED, f"Content-Type must be {CONTENT_TYPE}")
        except Rejection as rejection:
            await run_in_threadpool(service.record_rejection, rejection, round_id, device_id)
            return _error(rejection)

        def ingest() -> Any:
            path = _signed_path(request)
            receipt, created = service.ingest_update(
                round_id, request.method, path, body, request.headers, update_mac, idempotency_key
            )
            return JSONResponse(receipt.to_dict(), status_code=201 if created else 200)

        try:
            return await run_in_threadpool(ingest)
        except Rejection as rejection:
            await run_in_threadpool(service.record_rejection, rejection, round_id, device_id)
            return _error(rejection)

    # ------------------------------------------------------------------ operator

    @app.post("/v1/admin/devices", tags=["admin"], status_code=201, responses={401: {}, 409: {}})
    async def enroll(
        request: Annotated[EnrollRequest | None, Body()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Any:
        """Enroll a device: its id and 256-bit secret (hex). The secret is shown once."""

        def run() -> Any:
            enrollment = service.enroll(request.device_id if request is not None else None)
            return JSONResponse({"device_id": enrollment.device_id, "secret": enrollment.secret.hex()}, status_code=201)

        return await admin_call(authorization, run)

    @app.post("/v1/admin/devices/{device_id}/revoke", tags=["admin"], responses={401: {}, 404: {}})
    async def revoke(device_id: DeviceId, authorization: Annotated[str | None, Header()] = None) -> Any:
        def run() -> Any:
            service.revoke(device_id)
            return {"device_id": device_id, "revoked": True}

        return await admin_call(authorization, run)

    @app.post("/v1/admin/rounds", tags=["admin"], status_code=201, responses={401: {}, 409: {}})
    async def open_round(
        request: Annotated[OpenRoundRequest | None, Body()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> Any:
        """Open the next round (refused with the numbers if it would exceed the ε budget)."""

        def run() -> Any:
            req = request or OpenRoundRequest()
            config = service.open_round(duration_s=req.duration_s, target_updates=req.target_updates)
            return JSONResponse(config.to_dict(), status_code=201)

        return await admin_call(authorization, run)

    @app.post("/v1/admin/rounds/{round_id}/close", tags=["admin"], responses={401: {}, 404: {}})
    async def close_round(round_id: RoundId, authorization: Annotated[str | None, Header()] = None) -> Any:
        """Close, aggregate and publish a round (idempotent)."""
        return await admin_call(authorization, lambda: jsonable(service.close_round(round_id)))

    @app.get("/v1/status", tags=["admin"], responses={401: {}})
    async def status(authorization: Annotated[str | None, Header()] = None) -> Any:
        """Rounds, ε spent and left (PLD and RDP, with and without amplification), rejections by reason, versions."""
        return await admin_call(authorization, lambda: jsonable(service.status()))

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
