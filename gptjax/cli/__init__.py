"""The command-line programs (`python -m gptjax.main`, `gptjax.generate`, ...) and what they share:
quiet library logs, a persistent compilation cache, one-line errors (exit 2) and a clean
Ctrl-C (exit 130).

Each command parses its flags, calls one library function and prints; the library never
imports from here.

Compiled programs are kept across runs in `$GPTJAX_COMPILE_CACHE` (default
`~/.cache/gptjax/jax_compile`), so a second `generate` or `chat` starts without compiling;
`GPTJAX_COMPILE_CACHE=off` (or a command's `--no_compile_cache`) turns the cache off.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Callable, TypeVar

from absl import flags

from gptjax.errors import UserError

T = TypeVar("T")

CACHE_ENV = "GPTJAX_COMPILE_CACHE"
DEFAULT_CACHE_DIR = os.path.join("~", ".cache", "gptjax", "jax_compile")
EXIT_INTERRUPTED = 130  # the shell's code for a program ended by SIGINT


def quiet_logs() -> None:
    """orbax and absl log every checkpoint step at INFO; keep the terminal for progress."""
    from absl import logging

    logging.set_verbosity(logging.WARNING)


def compile_cache_dir() -> str | None:
    """Where compiled programs are kept, or None when the cache is turned off."""
    value = os.environ.get(CACHE_ENV, DEFAULT_CACHE_DIR)
    if value.strip().lower() in ("", "0", "off", "false", "no"):
        return None
    return os.path.abspath(os.path.expanduser(value))


def use_compile_cache(enabled: bool = True) -> str | None:
    """Turn on JAX's persistent compilation cache (CPU programs too: no size or compile-time
    floor, since a CLI's small programs are exactly what a second run should not recompile).
    Returns the directory in use, None when off."""
    import jax

    directory = compile_cache_dir() if enabled else None
    if directory is None:
        jax.config.update("jax_enable_compilation_cache", False)
        return None
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
    return directory


def guarded(fn: Callable[[], T], compile_cache: bool = True,
            on_interrupt: Callable[[], str] | None = None, writes_nothing: bool = False) -> T:
    """Run an entry point: bad input ends as `error: ...` on stderr and exit status 2; Ctrl-C as
    one line (from `on_interrupt`, e.g. where training stopped and how to resume) and exit 130.

    `writes_nothing`: the command has nothing of its own to finish on exit (generate, chat run as a
    program, not called from Python; what they write is closed before they return), so it leaves
    at once, done or refused: the interpreter's teardown of JAX and orbax costs about half a
    second of a 2-core CPU, and orbax's restore threads, stopping during it, can print an "Event
    loop is closed" traceback after an error's one line.
    """
    quiet_logs()
    if not getattr(sys.unraisablehook, "redelivers_interrupts", False):  # once, however often guarded runs
        sys.unraisablehook = redeliver_dropped_interrupts(sys.unraisablehook)
    try:
        use_compile_cache(compile_cache)
        result = fn()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        if writes_nothing:
            leave(2)
        sys.exit(2)
    except KeyboardInterrupt:
        message = "interrupted"
        if on_interrupt is not None:
            try:
                message = on_interrupt()
            except Exception:  # the hint is a courtesy: never let it turn Ctrl-C into a traceback
                pass
        print(f"\n{message}", file=sys.stderr)
        # Not sys.exit: a checkpoint still being written in the background would fail at interpreter
        # shutdown with a traceback. Its temporary directory is never committed, so the newest
        # committed checkpoint is what a rerun resumes from.
        leave(EXIT_INTERRUPTED)
    if writes_nothing:
        leave(0)
    return result


def redeliver_dropped_interrupts(previous_hook: Callable) -> Callable:
    """A `sys.unraisablehook` that sends a dropped Ctrl-C again. A KeyboardInterrupt raised inside
    a gc callback, a `__del__` or a weakref callback cannot propagate: Python prints it and goes
    on (a Ctrl-C that landed in JAX's gc callback left training running). The hook sends SIGINT
    again a moment later instead; every other unraisable exception goes to `previous_hook`."""
    def hook(unraisable) -> None:
        if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
            threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT)).start()
            return
        previous_hook(unraisable)
    hook.redelivers_interrupts = True
    return hook


def leave(status: int) -> None:
    """Exit now, skipping the interpreter's teardown, once stdout and stderr are written."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def absl_help(argv: list[str] | None, doc: str, module: str) -> None:
    """Answer --help for an absl command with its own docstring (which holds an example) and its
    flags: absl would print the docstring of the `python -m` shim, which says neither."""
    args = sys.argv[1:] if argv is None else argv[1:]
    if any(a in ("-h", "--help", "--helpshort", "-?") for a in args):
        print(doc.strip() + "\n\nflags:\n" + flags.FLAGS.module_help(module))
        sys.exit(0)


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
