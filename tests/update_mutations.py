"""Hostile variants of an encoded ``AdapterUpdate``, for the parser unit tests and the upload fuzz test.

An update is ``u64 header length | JSON header | tensor data`` (safetensors); the JSON header holds
``__metadata__.privtune``, itself a JSON string with the update's fields. The helpers here rebuild
bodies from header *text* (not dicts), so they can express what a JSON library would never write:
repeated keys, 5,000-digit integers, nesting thousands deep.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

from ondevice.protocol import UPDATE_METADATA_FIELDS

Mutation = Callable[[bytes], bytes]


def split(body: bytes) -> tuple[dict[str, Any], bytes]:
    """(the header JSON object, the tensor data) of a well-formed body."""
    (length,) = struct.unpack("<Q", body[:8])
    header: dict[str, Any] = json.loads(body[8 : 8 + length])
    return header, body[8 + length :]


def assemble(header_text: str | bytes, data: bytes) -> bytes:
    """A body from header text (space-padded to 8 bytes, as safetensors writes it) and tensor data."""
    raw = header_text.encode("utf-8") if isinstance(header_text, str) else header_text
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw + data


def metadata(body: bytes) -> dict[str, Any]:
    """The update's fields (the parsed ``privtune`` metadata string)."""
    fields: dict[str, Any] = json.loads(split(body)[0]["__metadata__"]["privtune"])
    return fields


def with_header(body: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """The body with ``change`` applied to its header object (re-serialised, data kept)."""
    header, data = split(body)
    change(header)
    return assemble(json.dumps(header), data)


def with_metadata_text(body: bytes, text: str) -> bytes:
    """The body with its ``privtune`` metadata string replaced by ``text`` (any text)."""

    def change(header: dict[str, Any]) -> None:
        header["__metadata__"]["privtune"] = text

    return with_header(body, change)


def with_field_text(body: bytes, key: str, raw_value: str) -> bytes:
    """The body with metadata field ``key`` set to the raw JSON text ``raw_value`` (added if absent)."""
    fields = metadata(body)
    fields.pop(key, None)
    text = json.dumps(fields)
    return with_metadata_text(body, text[:-1] + f', "{key}": {raw_value}' + "}")


def with_field(body: bytes, key: str, value: object) -> bytes:
    return with_field_text(body, key, json.dumps(value))


def _tensor_names(header: dict[str, Any]) -> list[str]:
    return [k for k in header if k != "__metadata__"]


def duplicate_tensor_name(body: bytes) -> bytes:
    """The first tensor's entry written twice in the header text (a dict parser keeps only one)."""
    header, data = split(body)
    name = _tensor_names(header)[0]
    entry = f"{json.dumps(name)}: {json.dumps(header[name])}"
    text = json.dumps(header)
    return assemble(text[:-1] + ", " + entry + "}", data)


def duplicate_metadata_key(body: bytes) -> bytes:
    text = json.dumps(metadata(body))
    return with_metadata_text(body, text[:-1] + ', "round_id": 0}')


def deep_header(body: bytes, depth: int = 30_000) -> bytes:
    """Nesting far past the JSON parser's recursion limit, yet within the header cap (so the parser meets it)."""
    header, data = split(body)
    text = json.dumps(header)
    return assemble(text[:-1] + ', "x": ' + "[" * depth + "]" * depth + "}", data)


def deep_metadata(body: bytes, depth: int = 1_500) -> bytes:
    """Nesting past the recursion limit within the metadata cap."""
    return with_field_text(body, "dp", "[" * depth + "]" * depth)


def huge_int(body: bytes, digits: int = 5_000) -> bytes:
    return with_field_text(body, "round_id", "9" * digits)


def huge_metadata(body: bytes, size: int = 32 * 1024 * 1024) -> bytes:
    """A ``size``-character junk field in the metadata (the header grows with it)."""
    return with_field(body, "padding", "x" * size)


def shifted_offsets(body: bytes, shift: int = 4) -> bytes:
    """The first tensor's byte range moved by ``shift`` (a gap or an overlap with its neighbour)."""

    def change(header: dict[str, Any]) -> None:
        first = min(_tensor_names(header), key=lambda n: header[n]["data_offsets"][0])
        begin, end = header[first]["data_offsets"]
        header[first]["data_offsets"] = [begin + shift, end + shift]

    return with_header(body, change)


def out_of_bounds_offsets(body: bytes) -> bytes:
    def change(header: dict[str, Any]) -> None:
        last = max(_tensor_names(header), key=lambda n: header[n]["data_offsets"][1])
        begin, end = header[last]["data_offsets"]
        header[last]["data_offsets"] = [begin, end + 10**12]

    return with_header(body, change)


def wrong_shape_for_offsets(body: bytes) -> bytes:
    def change(header: dict[str, Any]) -> None:
        name = _tensor_names(header)[0]
        header[name]["shape"] = [*header[name]["shape"], 2]

    return with_header(body, change)


def many_tensors(body: bytes, count: int = 2_000) -> bytes:
    """``count`` extra zero-size tensors (they take no data, only header entries)."""
    header, data = split(body)
    for i in range(count):
        header[f"extra.{i}"] = {"dtype": "F32", "shape": [0], "data_offsets": [len(data), len(data)]}
    return assemble(json.dumps(header), data)


def huge_length_prefix(body: bytes) -> bytes:
    return struct.pack("<Q", 2**64 - 1) + body[8:]


NAMED: dict[str, Mutation] = {
    "duplicate tensor name": duplicate_tensor_name,
    "duplicate metadata key": duplicate_metadata_key,
    "deeply nested header": deep_header,
    "deeply nested metadata": deep_metadata,
    "5,000-digit int": huge_int,
    "round_id of 2**63": lambda b: with_field(b, "round_id", 2**63),
    "num_examples of 2**63": lambda b: with_field(b, "num_examples", 2**63),
    "num_examples, small": lambda b: with_field(b, "num_examples", 5),
    "unknown metadata key": lambda b: with_field(b, "extra", 1),
    "non-ASCII device id": lambda b: with_field(b, "device_id", "dévice-1"),
    "non-ASCII escaped nonce": lambda b: with_field_text(b, "nonce", '"\\u00e9' + "0" * 31 + '"'),
    "trailing newline in nonce": lambda b: with_field(b, "nonce", "0" * 32 + "\n"),
    "float overflow": lambda b: with_field_text(b, "local_epsilon", "1e999"),
    "NaN": lambda b: with_field_text(b, "local_epsilon", "NaN"),
    "1 MiB of metadata": lambda b: huge_metadata(b, 1024 * 1024),
    "metadata not a string": lambda b: with_header(b, lambda h: h["__metadata__"].update(privtune=[1])),
    "second metadata entry": lambda b: with_header(b, lambda h: h["__metadata__"].update(other="x")),
    "metadata not an object": lambda b: with_metadata_text(b, "[1, 2]"),
    "shifted offsets": shifted_offsets,
    "overlapping offsets": lambda b: shifted_offsets(b, -4),
    "out-of-bounds offsets": out_of_bounds_offsets,
    "shape not matching offsets": wrong_shape_for_offsets,
    "2,000 tensors": many_tensors,
    "header length 2**64 - 1": huge_length_prefix,
    "truncated": lambda b: b[: len(b) // 2],
    "empty": lambda b: b"",
}
"""Each of these must be refused as malformed (4xx), never crash the parser."""


_json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    _json_leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
FIELDS = tuple(sorted(UPDATE_METADATA_FIELDS))
RAW_VALUES = st.sampled_from(
    ["9" * 5000, "-" + "9" * 30, "1e999", "-1e999", "NaN", "Infinity", "[" * 3000 + "]" * 3000, '"\\ud800"', "1.5"]
)


@st.composite
def hostile_bodies(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` broken in one of several ways: a named mutation, a field set to random JSON or to a raw
    token JSON libraries never emit, byte flips, truncation, or random bytes spliced in."""
    kind = draw(st.sampled_from(["named", "field", "raw", "flip", "truncate", "splice"]))
    if kind == "named":
        return NAMED[draw(st.sampled_from(sorted(NAMED)))](valid)
    if kind == "field":
        return with_field(valid, draw(st.sampled_from(FIELDS)), draw(json_values))
    if kind == "raw":
        return with_field_text(valid, draw(st.sampled_from(FIELDS)), draw(RAW_VALUES))
    blob = bytearray(valid)
    if kind == "flip":
        for _ in range(draw(st.integers(1, 4))):
            blob[draw(st.integers(0, len(blob) - 1))] ^= draw(st.integers(1, 255))
        return bytes(blob)
    if kind == "truncate":
        return bytes(blob[: draw(st.integers(0, len(blob) - 1))])
    at = draw(st.integers(0, len(blob)))
    return bytes(blob[:at]) + draw(st.binary(min_size=1, max_size=64)) + bytes(blob[at:])
