"""The command-line programs (`python -m gptjax.main`, `gptjax.generate`, ...) and what they share:
quiet library logs, one-line errors, exit 2.

Each command parses its flags, calls one library function and prints; the library never
imports from here.
"""

from __future__ import annotations

import sys
from typing import Callable, TypeVar

from absl import flags

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


def parse_config_flags(argv: list[str], hint: str) -> list[str]:
    """Parse absl flags with a --config file; an unknown config key, a bad value or a config file
    that fails to load is one line and exit 2, not a traceback."""
    try:
        rest = flags.FLAGS(argv)
        if flags.FLAGS.config is not None:
            flags.FLAGS.config.get("seed")  # a config file that failed to load raises here, not later
        return rest
    except (flags.Error, AttributeError, KeyError, ValueError, TypeError, OSError) as e:
        message = str(e).strip().strip('"').splitlines()[-1] if str(e).strip() else type(e).__name__
        print(f"error: bad command line ({type(e).__name__}: {message}); {hint}", file=sys.stderr)
        sys.exit(2)
