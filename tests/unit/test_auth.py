"""Request signing: the canonical string, header parsing, skew, replay, and fuzzed tampering."""

from __future__ import annotations

import hashlib
import hmac

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ondevice import auth
from ondevice.auth import (
    HEADER_DEVICE,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    AuthError,
    InMemoryNonceCache,
    canonical_request,
    parse_auth_headers,
    sign_request,
    signed_headers,
    verify_request,
)
from ondevice.protocol import RejectionReason

SECRET = bytes(range(32))
DEVICE = "device-7"
PATH = "/v1/rounds/3/updates"
BODY = b"\x00safetensors bytes\xff" * 3
NOW = 1_750_000_000
NONCE = "0123456789abcdef" * 2


def headers_for(body: bytes = BODY, path: str = PATH, method: str = "POST", **kw: object) -> dict[str, str]:
    return signed_headers(DEVICE, SECRET, method, path, body, now=kw.pop("now", NOW), nonce=kw.pop("nonce", NONCE))


def reason_of(excinfo: pytest.ExceptionInfo[AuthError]) -> RejectionReason:
    return excinfo.value.reason


def test_signature_is_hmac_sha256_over_the_documented_canonical_string() -> None:
    expected_message = f"PRIVTUNE-HMAC-SHA256\nPOST\n{PATH}\n{hashlib.sha256(BODY).hexdigest()}\n{NOW}\n{NONCE}".encode(
        "ascii"
    )
    oracle = hmac.new(SECRET, expected_message, hashlib.sha256).hexdigest()
    assert canonical_request("POST", PATH, BODY, NOW, NONCE).encode("ascii") == expected_message
    assert sign_request(SECRET, "POST", PATH, BODY, NOW, NONCE) == oracle
    headers = headers_for()
    assert headers == {
        HEADER_DEVICE: DEVICE,
        HEADER_TIMESTAMP: str(NOW),
        HEADER_NONCE: NONCE,
        HEADER_SIGNATURE: oracle,
    }


def test_round_trip_returns_the_parsed_headers() -> None:
    parsed = verify_request(SECRET, "POST", PATH, BODY, headers_for(), now=NOW + 12)
    assert (parsed.device_id, parsed.timestamp, parsed.nonce) == (DEVICE, NOW, NONCE)


def test_header_names_are_case_insensitive_and_httpx_headers_work() -> None:
    lowered = {name.lower(): value for name, value in headers_for().items()}
    verify_request(SECRET, "POST", PATH, BODY, lowered, now=NOW)
    verify_request(SECRET, "POST", PATH, BODY, httpx.Headers(headers_for()), now=NOW)


def test_default_nonce_is_fresh_secure_hex_and_timestamp_is_integer_seconds() -> None:
    first = signed_headers(DEVICE, SECRET, "POST", PATH, BODY, now=NOW + 0.9)
    second = signed_headers(DEVICE, SECRET, "POST", PATH, BODY, now=NOW + 0.9)
    assert first[HEADER_TIMESTAMP] == str(NOW)
    for headers in (first, second):
        nonce = headers[HEADER_NONCE]
        assert len(nonce) >= 32 and all(c in "0123456789abcdef" for c in nonce)
    assert first[HEADER_NONCE] != second[HEADER_NONCE]
    assert first[HEADER_SIGNATURE] != second[HEADER_SIGNATURE]


def test_timestamp_skew_limit_is_inclusive_both_ways() -> None:
    headers = headers_for()
    verify_request(SECRET, "POST", PATH, BODY, headers, now=NOW + 300)
    verify_request(SECRET, "POST", PATH, BODY, headers, now=NOW - 300)
    for now in (NOW + 301, NOW - 301, NOW + 10**6):
        with pytest.raises(AuthError) as excinfo:
            verify_request(SECRET, "POST", PATH, BODY, headers, now=now)
        assert reason_of(excinfo) is RejectionReason.STALE_TIMESTAMP
    with pytest.raises(AuthError) as excinfo:
        verify_request(SECRET, "POST", PATH, BODY, headers, now=NOW + 31, max_skew_s=30)
    assert reason_of(excinfo) is RejectionReason.STALE_TIMESTAMP


def test_query_strings_and_unnormalised_paths_are_refused() -> None:
    for path in (PATH + "?a=1", PATH + "#frag", "v1/rounds/3/updates", "/v1/rounds 3", "/v1/\nrounds", ""):
        with pytest.raises(ValueError, match="path"):
            sign_request(SECRET, "POST", path, BODY, NOW, NONCE)
        with pytest.raises(AuthError) as excinfo:
            verify_request(SECRET, "POST", path, BODY, headers_for(), now=NOW)
        assert reason_of(excinfo) is RejectionReason.MALFORMED
    # Signed exactly as sent: an equivalent spelling of the path is a different path.
    headers = headers_for()
    variants = ("/v1/rounds/3/updates/", "/v1//rounds/3/updates", "/v1/rounds/%33/updates", "/v1/./rounds/3/updates")
    for variant in variants:
        with pytest.raises(AuthError) as excinfo:
            verify_request(SECRET, "POST", variant, BODY, headers, now=NOW)
        assert reason_of(excinfo) is RejectionReason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("header", "value"),
    [
        (HEADER_TIMESTAMP, "12.5"),
        (HEADER_TIMESTAMP, "-1"),
        (HEADER_TIMESTAMP, ""),
        (HEADER_TIMESTAMP, f"0{NOW}"),
        (HEADER_TIMESTAMP, f" {NOW}"),
        (HEADER_NONCE, "ab" * 15),
        (HEADER_NONCE, NONCE.upper()),
        (HEADER_NONCE, "g" * 32),
        (HEADER_SIGNATURE, "ab" * 31),
        (HEADER_SIGNATURE, "AB" * 32),
        (HEADER_DEVICE, "-bad"),
        (HEADER_DEVICE, ""),
        # non-ASCII, trailing newlines (a "$" anchor would admit them), over-long and huge values
        (HEADER_SIGNATURE, "é" * 64),
        (HEADER_SIGNATURE, "ab" * 32 + "\n"),
        (HEADER_SIGNATURE, "ab" * 4096),
        (HEADER_NONCE, NONCE + "\n"),
        (HEADER_NONCE, "٠" * 32),  # Arabic-Indic zeros: digits to str.isdigit, not hex
        (HEADER_TIMESTAMP, f"{NOW}\n"),
        (HEADER_TIMESTAMP, "9" * 5000),  # past Python's 4300-digit int() limit
        (HEADER_TIMESTAMP, "١٧٥٠٠٠٠٠٠٠"),  # int() would accept these digits
        (HEADER_DEVICE, f"{DEVICE}\n"),
        (HEADER_DEVICE, "dévice-7"),
        (HEADER_DEVICE, "d" * 129),
    ],
)
def test_malformed_header_values_are_rejected_as_malformed(header: str, value: str) -> None:
    headers = {**headers_for(), header: value}
    with pytest.raises(AuthError) as excinfo:
        verify_request(SECRET, "POST", PATH, BODY, headers, now=NOW)
    assert reason_of(excinfo) is RejectionReason.MALFORMED
    assert header in excinfo.value.message


@pytest.mark.parametrize("missing", [HEADER_DEVICE, HEADER_TIMESTAMP, HEADER_NONCE, HEADER_SIGNATURE])
def test_missing_header_is_malformed(missing: str) -> None:
    headers = {k: v for k, v in headers_for().items() if k != missing}
    with pytest.raises(AuthError) as excinfo:
        verify_request(SECRET, "POST", PATH, BODY, headers, now=NOW)
    assert reason_of(excinfo) is RejectionReason.MALFORMED
    assert missing in excinfo.value.message


def test_a_repeated_header_is_malformed() -> None:
    good = headers_for()
    items = [*good.items(), (HEADER_SIGNATURE.lower(), good[HEADER_SIGNATURE])]

    class Raw:
        def items(self) -> list[tuple[str, str]]:
            return items

    with pytest.raises(AuthError, match="more than once") as excinfo:
        parse_auth_headers(Raw())
    assert reason_of(excinfo) is RejectionReason.MALFORMED


def test_signing_refuses_bad_inputs() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        sign_request(b"short", "POST", PATH, BODY, NOW, NONCE)
    with pytest.raises(ValueError, match="method"):
        sign_request(SECRET, "post", PATH, BODY, NOW, NONCE)
    with pytest.raises(ValueError, match="timestamp"):
        sign_request(SECRET, "POST", PATH, BODY, -1, NONCE)
    with pytest.raises(ValueError, match="nonce"):
        sign_request(SECRET, "POST", PATH, BODY, NOW, "abc")
    with pytest.raises(ValueError, match="device_id"):
        signed_headers("bad device", SECRET, "POST", PATH, BODY)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        verify_request(b"short", "POST", PATH, BODY, headers_for(), now=NOW)


def test_signature_comparison_uses_compare_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, str]] = []
    real = hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    headers = headers_for()
    verify_request(SECRET, "POST", PATH, BODY, headers, now=NOW)
    assert calls == [(headers[HEADER_SIGNATURE], headers[HEADER_SIGNATURE])]


# --------------------------------------------------------------------------- replay


def test_nonce_cache_rejects_a_replay_and_only_after_a_valid_signature() -> None:
    cache = InMemoryNonceCache()
    good = headers_for()
    forged = {**good, HEADER_SIGNATURE: "0" * 64}
    with pytest.raises(AuthError) as excinfo:
        verify_request(SECRET, "POST", PATH, BODY, forged, now=NOW, nonces=cache)
    assert reason_of(excinfo) is RejectionReason.BAD_SIGNATURE
    assert len(cache) == 0  # a forged request does not burn the device's nonce
    verify_request(SECRET, "POST", PATH, BODY, good, now=NOW, nonces=cache)
    with pytest.raises(AuthError) as excinfo:
        verify_request(SECRET, "POST", PATH, BODY, good, now=NOW + 1, nonces=cache)
    assert reason_of(excinfo) is RejectionReason.REPLAYED_NONCE


def test_nonce_cache_is_per_device_and_forgets_stale_entries() -> None:
    cache = InMemoryNonceCache()
    assert cache.remember("a", NONCE, NOW + 300, now=NOW)
    assert cache.remember("b", NONCE, NOW + 300, now=NOW)
    assert not cache.remember("a", NONCE, NOW + 300, now=NOW + 300)
    assert len(cache) == 2
    # Past the window the timestamp itself is stale, so the entry can go.
    assert cache.remember("c", "f" * 32, NOW + 1000, now=NOW + 301)
    assert len(cache) == 1


def test_replay_after_the_window_is_stale_not_accepted() -> None:
    cache = InMemoryNonceCache()
    good = headers_for()
    verify_request(SECRET, "POST", PATH, BODY, good, now=NOW, nonces=cache)
    with pytest.raises(AuthError) as excinfo:
        verify_request(SECRET, "POST", PATH, BODY, good, now=NOW + 301, nonces=cache)
    assert reason_of(excinfo) is RejectionReason.STALE_TIMESTAMP


# --------------------------------------------------------------------------- fuzzed tampering


def flip(data: bytes, position: int, replacement: int) -> bytes:
    """``data`` with the byte at ``position % len`` replaced by a different byte."""
    index = position % len(data)
    new = replacement if replacement != data[index] else (replacement + 1) % 256
    return data[:index] + bytes([new]) + data[index + 1 :]


def flip_text(text: str, position: int, replacement: int | str, alphabet: str) -> str:
    """``text`` with one character replaced: by another character of ``alphabet`` (a change that keeps
    the field well-formed, so only the signature can catch it) or by an arbitrary byte."""
    if isinstance(replacement, int):
        return flip(text.encode("latin-1"), position, replacement).decode("latin-1")
    index = position % len(text)
    choices = [c for c in alphabet if c != text[index]]
    return text[:index] + choices[ord(replacement) % len(choices)] + text[index + 1 :]


HEX = "0123456789abcdef"
ALPHABETS = {
    "path": "abcdefghijklmnopqrstuvwxyz0123456789-._~%/:@",
    "method": "ABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "timestamp": "0123456789",
    "nonce": HEX,
    "signature": HEX,
    "device": "abcdefghijklmnopqrstuvwxyz0123456789",  # "-" would be malformed as a first character
}
HEADERS = {"timestamp": HEADER_TIMESTAMP, "nonce": HEADER_NONCE, "signature": HEADER_SIGNATURE, "device": HEADER_DEVICE}
FIELDS = ("body", "secret", *ALPHABETS)
replacements = st.one_of(st.characters(min_codepoint=32, max_codepoint=126), st.integers(min_value=0, max_value=255))


@settings(max_examples=600, deadline=None)
@given(
    body=st.binary(min_size=1, max_size=256),
    field=st.sampled_from(FIELDS),
    position=st.integers(min_value=0, max_value=10_000),
    replacement=replacements,
    nonce=st.binary(min_size=16, max_size=24),
)
def test_any_single_byte_change_breaks_verification(
    body: bytes, field: str, position: int, replacement: int | str, nonce: bytes
) -> None:
    headers = signed_headers(DEVICE, SECRET, "POST", PATH, body, now=NOW, nonce=nonce.hex())
    # A skew window wider than any 12-digit timestamp: a changed timestamp cannot pass as merely stale.
    skew = 10**13
    verify_request(SECRET, "POST", PATH, body, headers, now=NOW, max_skew_s=skew)

    byte = replacement if isinstance(replacement, int) else ord(replacement)
    secret, method, path = SECRET, "POST", PATH
    if field == "body":
        body = flip(body, position, byte)
    elif field == "secret":
        secret = flip(SECRET, position, byte)
    elif field == "path":
        path = flip_text(PATH, position, replacement, ALPHABETS[field])
    elif field == "method":
        method = flip_text("POST", position, replacement, ALPHABETS[field])
    else:
        name = HEADERS[field]
        headers = {**headers, name: flip_text(headers[name], position, replacement, ALPHABETS[field])}
        if field == "device":
            # The id is not in the signed string: it selects the secret, so another id means
            # another device's secret on the server.
            secret = bytes(reversed(SECRET))
    with pytest.raises(AuthError) as excinfo:
        verify_request(secret, method, path, body, headers, now=NOW, max_skew_s=skew)
    # In-alphabet changes keep the field well-formed, except a leading zero or a path not starting with "/".
    well_formed = (
        isinstance(replacement, str) and not headers[HEADER_TIMESTAMP].startswith("0") and path.startswith("/")
    )
    if field in ("body", "secret") or well_formed:
        assert reason_of(excinfo) is RejectionReason.BAD_SIGNATURE
    else:
        assert reason_of(excinfo) in (RejectionReason.BAD_SIGNATURE, RejectionReason.MALFORMED)


@settings(max_examples=100, deadline=None)
@given(body=st.binary(min_size=1, max_size=256), extra=st.binary(min_size=1, max_size=8))
def test_appending_or_truncating_the_body_breaks_verification(body: bytes, extra: bytes) -> None:
    headers = headers_for(body=body)
    for changed in (body + extra, body[:-1], extra + body):
        with pytest.raises(AuthError) as excinfo:
            verify_request(SECRET, "POST", PATH, changed, headers, now=NOW)
        assert reason_of(excinfo) is RejectionReason.BAD_SIGNATURE
