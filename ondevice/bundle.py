"""Open a phone bundle safely: parse ``manifest.json`` and check every file before use.

A missing file, a wrong size or sha256, an unsupported protocol version or a malformed
manifest raises ``BundleError`` naming the file — never a crash deep inside a runtime.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ondevice.protocol import ArtifactManifest, ProtocolError

MANIFEST_FILE = "manifest.json"
TOKENIZER_ROLE = "tokenizer"


class BundleError(RuntimeError):
    """The bundle cannot be used; the message names the file and what is wrong with it."""


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Streaming sha256 (hex) of one file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def load_manifest(bundle_dir: str | Path) -> ArtifactManifest:
    """Parse ``bundle_dir/manifest.json`` (no file checks; see ``verify_bundle``)."""
    path = Path(bundle_dir) / MANIFEST_FILE
    if not path.is_file():
        raise BundleError(f"{path}: not found; is {bundle_dir} a bundle written by `privtune export`?")
    try:
        return ArtifactManifest.from_json(path.read_bytes())
    except ProtocolError as exc:
        raise BundleError(f"{path}: {exc}") from exc


def verify_bundle(bundle_dir: str | Path) -> ArtifactManifest:
    """The manifest, after checking every listed file's presence, size and sha256."""
    root = Path(bundle_dir)
    manifest = load_manifest(root)
    for entry in manifest.files:
        path = root / entry.path
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest ({entry.backend}:{entry.role}) but missing")
        size = path.stat().st_size
        if size != entry.size_bytes:
            raise BundleError(f"{path}: {size} bytes, the manifest says {entry.size_bytes}; the bundle is damaged")
        found = file_sha256(path)
        if found != entry.sha256:
            raise BundleError(f"{path}: sha256 {found[:16]}… does not match the manifest's {entry.sha256[:16]}…")
    tokenizer = manifest.file(TOKENIZER_ROLE)
    if tokenizer.sha256 != manifest.tokenizer_sha256:
        raise BundleError(f"{root / tokenizer.path}: tokenizer hash disagrees with manifest.tokenizer_sha256")
    return manifest
