"""One training at a time per workdir: an exclusive `flock` on `<workdir>/.lock`, held until the
process exits.

Two trainings on one workdir would interleave checkpoints and metrics; the second one stops
before it writes anything. The kernel drops the lock when the holder dies (kill -9 included), so
a stale lock never blocks a rerun. A process keeps the locks it took, so running several jobs
one after another in one process (a sweep, the tests) takes each lock once.
"""

from __future__ import annotations

import fcntl
import os
from typing import IO

from gptjax.errors import UserError

HELD: dict[str, IO] = {}  # real path of a workdir -> its open lock file


def hold(workdir: str) -> None:
    """Take the workdir's lock for this process, or stop with one line if another process has it."""
    key = os.path.realpath(workdir)
    if key in HELD:
        return
    path = os.path.join(workdir, ".lock")
    try:
        f = open(path, "a")  # left empty: a refused run changes no file
    except OSError as e:
        raise UserError(f"cannot create {path} ({e.strerror}); is the workdir writable?") from None
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise UserError(f"{workdir} is in use by another training (it holds {path}); wait for it to finish or "
                        "train in a new --workdir") from None
    HELD[key] = f
