"""A versioned base-model artifact: model files plus a manifest of their sha256 digests.

The coordinator writes one after task adaptation; clients verify it before use. The version
is a digest over the manifest's file digests, so identical content means an identical version
and a client can cache bases by content.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from oppu.shared.errors import OppuError

MANIFEST_FILE = "oppu_manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class BaseManifest:
    """What a base artifact is and how to check it, file by file."""

    model_id: str
    task: str
    variant: str
    files: dict[str, str]  # relative path -> sha256
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    training: dict = field(default_factory=dict)
    format_version: int = MANIFEST_VERSION

    @property
    def version(self) -> str:
        """Content address: a digest over every file's digest (metadata excluded)."""
        lines = "\n".join(f"{name} {digest}" for name, digest in sorted(self.files.items()))
        return hashlib.sha256(lines.encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "version": self.version}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> BaseManifest:
        """Parse and type-check a manifest: one that arrives signed is still checked, so a
        wrong type is this clear error here, never a crash further on."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise ManifestError(f"not JSON ({type(exc).__name__})") from None
        if not isinstance(data, dict):
            raise ManifestError(f"a JSON {type(data).__name__}, not an object")
        files = data.get("files")
        if not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
            raise ManifestError("'files' must map each relative path to its sha256")
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise ManifestError(f"{', '.join(map(repr, missing))} missing")
        for name, kind in _FIELD_TYPES.items():
            if name in data and not isinstance(data[name], kind):
                raise ManifestError(f"'{name}' must be a {kind.__name__}")
        declared = data.pop("version", None)
        known = set(cls.__dataclass_fields__)
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        if declared is not None and declared != manifest.version:
            raise ManifestError(f"it declares version {str(declared)[:64]!r} but its files hash "
                                f"to {manifest.version}")
        return manifest


_FIELD_TYPES = {"model_id": str, "task": str, "variant": str, "created": str, "training": dict,
                "format_version": int, "version": str}
"""Each manifest field's JSON type, checked on reading (``files`` is checked on its own)."""
_REQUIRED = ("model_id", "task", "variant")


class ManifestError(OppuError, ValueError):
    """A base manifest that is not one: wrong JSON, a field of the wrong type."""


def write_manifest(directory: Path, *, model_id: str, task: str, variant: str,
                   training: dict | None = None) -> BaseManifest:
    """Hash every file in ``directory`` and write the manifest beside them."""
    files = {
        str(p.relative_to(directory)): sha256_file(p)
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != MANIFEST_FILE
    }
    manifest = BaseManifest(model_id=model_id, task=task, variant=variant, files=files,
                            training=training or {})
    (directory / MANIFEST_FILE).write_text(manifest.to_json())
    return manifest


def read_manifest(directory: Path) -> BaseManifest | None:
    path = Path(directory) / MANIFEST_FILE
    return BaseManifest.from_json(path.read_text()) if path.is_file() else None


def verify_artifact(directory: Path) -> BaseManifest:
    """Check every file against the manifest; raise naming the first file that differs."""
    directory = Path(directory)
    manifest = read_manifest(directory)
    if manifest is None:
        raise OppuError(f"{directory} has no {MANIFEST_FILE}: not an oppu base artifact.")
    for name, digest in manifest.files.items():
        path = directory / name
        if not path.is_file():
            raise OppuError(f"Base artifact {directory} is missing {name}.")
        if sha256_file(path) != digest:
            raise OppuError(f"Base artifact file {path} does not match its sha256 in the manifest.")
    return manifest
