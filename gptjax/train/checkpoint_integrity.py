"""Checksums of checkpoint steps: recorded when a step commits, verified before it is restored.

orbax commits a step by renaming its temporary directory, but nothing checks the bytes when
they are read back: same-size garbled bytes load silently, and truncated or missing files end in
long tracebacks. `seal` writes the SHA-256 of every file of a step into the step itself; it runs
in orbax's post-finalisation hook, before the rename, so a step and its record commit together
and a step without a record is damaged (or was written before records existed).
"""

from __future__ import annotations

import hashlib
import json
import os

RECORD = "checksums.json"
# orbax rewrites these while committing, after the post-finalisation hook. They hold bookkeeping,
# no arrays: damaged, orbax logs it and restores the arrays (verified) all the same.
COMMIT_FILES = ("_CHECKPOINT_METADATA", "commit_success.txt")
TMP_SUFFIX = ".orbax-checkpoint-tmp"  # orbax's name for a step directory before it commits


def file_digests(step_dir: str) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under step_dir but the record itself."""
    out = {}
    for parent, dirs, files in os.walk(step_dir):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(parent, name)
            rel = os.path.relpath(path, step_dir)
            if rel in (RECORD, RECORD + ".tmp") or rel in COMMIT_FILES:
                continue
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            out[rel] = h.hexdigest()
    return out


def seal(step_dir: str) -> None:
    """Record the checksums of step_dir's files inside it."""
    tmp = os.path.join(step_dir, RECORD + ".tmp")
    with open(tmp, "w") as f:
        json.dump(file_digests(step_dir), f, indent=0, sort_keys=True)
    os.replace(tmp, os.path.join(step_dir, RECORD))


def seal_pending(root: str, step: int) -> None:
    """Seal the step orbax is about to commit under root (its temporary directory)."""
    seal(os.path.join(root, f"{step}{TMP_SUFFIX}"))


def has_record(step_dir: str) -> bool:
    return os.path.exists(os.path.join(step_dir, RECORD))


def problem(step_dir: str) -> str:
    """What is wrong with a committed step ("" when every file matches its record)."""
    try:
        with open(os.path.join(step_dir, RECORD)) as f:
            recorded = json.load(f)
        if not isinstance(recorded, dict):
            raise ValueError
    except FileNotFoundError:
        return f"{RECORD} is missing"
    except (OSError, ValueError):
        return f"{RECORD} is damaged"
    try:
        found = file_digests(step_dir)
    except OSError as e:
        return f"a file cannot be read ({e})"
    missing = sorted(set(recorded) - set(found))
    changed = sorted(p for p in recorded if p in found and found[p] != recorded[p])
    if missing:
        return f"{missing[0]} is missing" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
    if changed:
        return f"{changed[0]} does not match its checksum" + (
            f" (and {len(changed) - 1} more)" if len(changed) > 1 else "")
    return ""
