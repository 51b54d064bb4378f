"""manifest.json of a prepared directory: what it was made from, and how far preparation got.

It is rewritten (to a temporary file, then renamed) after every finished shard, so a killed
preparation leaves a manifest that names exactly the shards that are whole.
"""

from __future__ import annotations

import hashlib
import json
import os

from gptjax.errors import UserError

MANIFEST = "manifest.json"
FORMAT = 1


def config_hash(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def read_manifest(directory: str) -> dict | None:
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def write_manifest(directory: str, manifest: dict) -> None:
    tmp = os.path.join(directory, f".{MANIFEST}.tmp")
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, os.path.join(directory, MANIFEST))


def open_manifest(directory: str, settings: dict, sources: list[dict]) -> dict:
    """The manifest to continue from: the existing one if it was made from these settings and
    these source files, a new one for an empty or missing directory (or one where nothing was
    finished yet, such as a first attempt that stopped at a bad setting); anything else is refused."""
    manifest = read_manifest(directory)
    ours = {MANIFEST, "tokenizer"} if manifest is not None else set()
    if manifest is not None and "tokenizer" not in manifest:
        manifest = None
    if manifest is None:
        if os.path.isdir(directory) and [n for n in os.listdir(directory) if not n.startswith(".") and n not in ours]:
            raise UserError(f"{directory} is not empty and holds no {MANIFEST}; prepare into a new "
                            "or empty directory")
        os.makedirs(directory, exist_ok=True)
        manifest = {"format": FORMAT, "config_hash": config_hash(settings), "settings": settings,
                    "sources": sources, "splits": {}, "complete": False}
        write_manifest(directory, manifest)
        return manifest
    if manifest.get("format") != FORMAT:
        raise UserError(f"{directory} was prepared by another version (format {manifest.get('format')}, "
                        f"not {FORMAT}); prepare into a new directory")
    refuse_changes(directory, manifest, settings, sources)
    return manifest


def refuse_changes(directory: str, manifest: dict, settings: dict, sources: list[dict]) -> None:
    """One line naming the first setting or source file that differs from the manifest's."""
    old = manifest["settings"]
    for key in sorted(set(old) | set(settings)):
        if old.get(key) != settings.get(key):
            raise UserError(f"{directory} was prepared with data.{key}={old.get(key)!r}, but the config says "
                            f"{settings.get(key)!r}; use a new --out directory (or delete this one)")
    before = {s.get("path", s.get("package")): s for s in manifest["sources"]}
    now = {s.get("path", s.get("package")): s for s in sources}
    for name in sorted(set(before) | set(now)):
        if name not in now:
            change = "is gone"
        elif name not in before:
            change = "is new"
        elif before[name] != now[name]:
            change = "has changed (size or modification time)"
        else:
            continue
        raise UserError(f"source {name} {change} since {directory} was prepared; use a new --out "
                        "directory (or delete this one)")
