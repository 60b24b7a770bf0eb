"""The device's read side of the aggregator protocol: check in for a round, download a global adapter.

Uploads go through ``ondevice.upload.UploadClient`` (outbox, retries, idempotency). Every
request here is signed with ``ondevice.auth`` (an empty body for GET).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import safetensors.numpy

from ondevice.auth import signed_headers, validate_device_id
from ondevice.protocol import ErrorBody, ProtocolError, RoundConfig, TensorSpec

CHECKIN_PATH = "/v1/checkin"
ADAPTER_PATH = "/v1/adapters/{version}"
PARAMS_SHA_HEADER = "X-Privtune-Params-Sha256"
MAX_ADAPTER_BYTES = 64 * 1024 * 1024


class AggregatorError(RuntimeError):
    """The aggregator refused a request or answered outside the protocol."""

    def __init__(self, message: str, status: int | None = None, error: ErrorBody | None = None) -> None:
        super().__init__(message if status is None else f"HTTP {status}: {message}")
        self.status = status
        self.error = error


@dataclass(frozen=True)
class CheckInResult:
    """The open round (when this device was selected for it) and the selection decision."""

    round_config: RoundConfig | None
    selected: bool
    open_round_id: int | None = None
    """The open round's id even when this device was not selected (None: no round is open, or an
    older server that does not say)."""


class AggregatorClient:
    """Signed check-in and adapter download for one device; use as a context manager."""

    def __init__(
        self,
        base_url: str,
        device_id: str,
        secret: bytes,
        *,
        timeout_s: float = 30,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host or url.query:
            raise ValueError(f"base_url must be an http(s) URL with a host and no query, found {base_url!r}")
        self.base_url = str(url).rstrip("/")
        self.device_id = validate_device_id(device_id)
        self._secret = bytes(secret)
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s), transport=transport, follow_redirects=False)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AggregatorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: bytes = b"") -> httpx.Response:
        url = httpx.URL(self.base_url + path)
        headers = signed_headers(self.device_id, self._secret, method, url.raw_path.decode("ascii"), body)
        if body:
            headers["Content-Type"] = "application/json"
        try:
            response = self._http.request(method, url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise AggregatorError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise self._error(response)
        return response

    @staticmethod
    def _error(response: httpx.Response) -> AggregatorError:
        try:
            data: Any = response.json()
            error = ErrorBody.from_dict(data)
            return AggregatorError(f"{error.reason.value}: {error.message}", response.status_code, error)
        except (ValueError, ProtocolError, KeyError, TypeError):
            return AggregatorError(response.text[:200], response.status_code)

    def check_in(self) -> CheckInResult:
        """Ask for the open round; the server draws this device's selection once per round."""
        response = self._request("POST", CHECKIN_PATH, b"{}")
        try:
            data = response.json()
            round_data = data["round"]
            selected = data["selected"]
            config = None if round_data is None else RoundConfig.from_dict(round_data)
            open_round = data.get("open_round_id")
        except (ValueError, KeyError, TypeError, AttributeError, ProtocolError) as exc:
            raise AggregatorError(f"check-in answer is not a round announcement: {exc}", response.status_code) from exc
        if (
            not isinstance(selected, bool)
            or (config is not None and not selected)
            or (open_round is not None and (isinstance(open_round, bool) or not isinstance(open_round, int)))
            or (config is not None and open_round is not None and open_round != config.round_id)
        ):
            raise AggregatorError(f"check-in answer is inconsistent: {data!r}", response.status_code)
        return CheckInResult(config, selected, open_round)

    def fetch_adapter(self, version: int, trainable: Sequence[TensorSpec]) -> dict[str, np.ndarray]:
        """Download global adapter ``version``; its sha256 and every tensor's name and shape are checked."""
        response = self._request("GET", ADAPTER_PATH.format(version=int(version)))
        blob = response.content
        if len(blob) > MAX_ADAPTER_BYTES:
            raise AggregatorError(f"adapter v{version} is {len(blob)} bytes, over {MAX_ADAPTER_BYTES}")
        claimed = response.headers.get(PARAMS_SHA_HEADER)
        if claimed != hashlib.sha256(blob).hexdigest():
            raise AggregatorError(f"adapter v{version} does not match its {PARAMS_SHA_HEADER} header")
        try:
            tensors = safetensors.numpy.load(blob)
        except Exception as exc:  # safetensors' own error types
            raise AggregatorError(f"adapter v{version} is not safetensors: {exc}") from exc
        out: dict[str, np.ndarray] = {}
        for spec in trainable:
            value = tensors.get(spec.name)
            if value is None or tuple(value.shape) != tuple(spec.shape):
                found = None if value is None else value.shape
                raise AggregatorError(f"adapter v{version}: {spec.name} has shape {found}, expected {spec.shape}")
            out[spec.name] = np.asarray(value, dtype=np.float32)
        if set(tensors) != set(out):
            raise AggregatorError(f"adapter v{version} holds unexpected tensors {sorted(set(tensors) - set(out))[:3]}")
        return out
