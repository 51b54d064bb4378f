"""What the bad-input and fault tests compare before and after: every file of a tree, hashed."""

import hashlib
import os


def tree_hashes(root) -> dict[str, str]:
    """Relative path -> SHA-256 of every file under root."""
    out = {}
    for parent, _, files in os.walk(root):
        for name in files:
            path = os.path.join(parent, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha256(f.read()).hexdigest()
    return out
