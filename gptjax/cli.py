"""What every command-line entry point shares: quiet library logs, one-line errors, exit 2."""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

from gptjax.errors import UserError

T = TypeVar("T")


def quiet_logs() -> None:
    """orbax and absl log every checkpoint step at INFO; keep the terminal for progress."""
    from absl import logging

    logging.set_verbosity(logging.WARNING)


def guarded(fn: Callable[[], T]) -> T:
    """Run an entry point; bad input ends as `error: ...` on stderr and exit status 2."""
    quiet_logs()
    try:
        return fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
