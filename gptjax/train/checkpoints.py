"""orbax checkpoints: the last N states for resuming and the best one for evaluation.

A checkpoint holds the whole train state (params, optimizer state, step) and the loop's
`LoopState` as JSON (tokens seen, best validation loss, patience, time so far, stop reason).
Batches and dropout keys are functions of (seed, step), so the step is the whole data and RNG
position.

Every step carries the checksums of its files (train/checkpoint_integrity.py). A restore takes
the newest step that verifies and restores, warning about each newer one that does not; resuming
training moves those aside (never deletes them) so that the run can write its steps again. When
no step is intact the run stops with one line and leaves every file as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import Callable, Iterator

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from gptjax.errors import UserError
from gptjax.train import checkpoint_integrity as integrity
from gptjax.train.loop_state import LoopState
from gptjax.train.step import TrainState


class FailedWrites(logging.Filter):
    """orbax logs a failed background write (a full disk) with its traceback, then raises the error
    where the run waits for the write; that raise becomes one line (`Checkpoints.finish`), so the
    log records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, OSError) and "orbax" in record.pathname)


def quiet_failed_writes() -> None:
    absl_logger = logging.getLogger("absl")
    if not any(isinstance(f, FailedWrites) for f in absl_logger.filters):
        absl_logger.addFilter(FailedWrites())


def manager(root: str, name: str, keep: int, on_commit: Callable[[], None]) -> ocp.CheckpointManager:
    """One checkpoint series under root/name; `on_commit` runs before each step's directory commits.
    Its directory appears with the first save, so a run refused before training leaves none.

    Across processes orbax names its commit barrier after the step, so `last` and `best`
    saving the same step at once would meet at one barrier; the prefix keeps them apart.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=False, multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=name), async_options=ocp.AsyncOptions(post_finalization_callback=on_commit))
    return ocp.CheckpointManager(os.path.join(root, name), options=options)


class Checkpoints:
    def __init__(self, workdir: str, keep: int):
        self.root = os.path.abspath(os.path.join(workdir, "checkpoints"))
        quiet_failed_writes()
        self.pending: dict[str, int] = {}  # series -> the step being written
        self.last = manager(self.root, "last", keep, lambda: self.seal("last"))
        self.best = manager(self.root, "best", 1, lambda: self.seal("best"))
        self.verdicts: dict[tuple[str, int], str] = {}  # (series, step) -> problem, "" when intact
        self.warned: set[tuple[str, int]] = set()

    def seal(self, name: str) -> None:
        integrity.seal_pending(os.path.join(self.root, name), self.pending[name])

    def latest_step(self) -> int | None:
        return self.last.latest_step()

    def save(self, state: TrainState, loop: LoopState, best: bool = False) -> None:
        """Save asynchronously; `best` also replaces the best checkpoint."""
        step = int(loop.step)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(loop.to_json()))
        with ctrl_c_after():
            for name in ("last", "best") if best else ("last",):
                series = self.series(name)
                if series.latest_step() != step:
                    self.finish(series)  # the step in flight keeps its own number in self.pending
                    self.pending[name] = step
                    series.save(step, args=args)

    def series(self, name: str) -> ocp.CheckpointManager:
        return self.best if name == "best" else self.last

    def problem(self, name: str, step: int) -> str:
        """Why step `step` of a series may not be restored ("" when its files match their checksums)."""
        key = (name, step)
        if key not in self.verdicts:
            directory = os.path.join(self.root, name, str(step))
            steps = self.series(name).all_steps()
            legacy = not any(integrity.has_record(os.path.join(self.root, name, str(s))) for s in steps)
            self.verdicts[key] = "" if legacy else integrity.problem(directory)  # legacy: written before checksums
        return self.verdicts[key]

    def intact(self, names: tuple[str, ...], load: Callable[[ocp.CheckpointManager, int], dict]):
        """(series, step, what `load` read, the damaged steps passed over) of the newest step that
        verifies and loads, trying the series in order and warning once about each damaged step;
        None when there is no step at all."""
        damaged = []
        for name in names:
            for step in sorted(self.series(name).all_steps(), reverse=True):
                why = self.problem(name, step)
                if not why:
                    try:
                        return name, step, load(self.series(name), step), damaged
                    except Exception as e:  # noqa: BLE001 - whatever orbax raises on a damaged step
                        why = f"it does not restore ({type(e).__name__}: {first_line(e)})"
                        self.verdicts[(name, step)] = why
                damaged.append((name, step))
                if (name, step) in self.warned:
                    continue
                self.warned.add((name, step))
                print(f"warning: checkpoint {os.path.join(self.root, name, str(step))} is damaged: {why}; "
                      "trying an older one", file=sys.stderr)
        if damaged:
            raise UserError(f"no intact checkpoint in {self.root} (every step is damaged, see the warnings "
                            "above); nothing was changed: move the workdir aside and train again, or repair it")
        return None

    def restore(self, target: TrainState, which: str = "last") -> tuple[TrainState, LoopState]:
        """(state, loop state) of the newest intact checkpoint, restored onto `target`'s shapes and
        shardings (any mesh shape); `best` falls back to `last`. Resuming from `last` moves the
        damaged steps after it aside, so that the run writes them again."""
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        names = ("best", "last") if which == "best" else ("last",)
        found = self.intact(names, lambda series, step: series.restore(step, args=args))
        if found is None:
            raise UserError(f"{self.root} holds no checkpoint to restore")
        name, step, out, damaged = found
        if which == "last":
            self.set_aside([s for n, s in damaged if n == "last" and s > step])
        return out["state"], LoopState.from_json(out["meta"])

    def loop_state(self) -> LoopState | None:
        """The newest intact checkpoint's loop state (its arrays are verified, not read); None before
        the first checkpoint."""
        args = ocp.args.Composite(meta=ocp.args.JsonRestore())
        found = self.intact(("last",), lambda series, step: series.restore(step, args=args))
        return None if found is None else LoopState.from_json(found[2]["meta"])

    def set_aside(self, steps: list[int]) -> None:
        """Move damaged steps of `last` to checkpoints/damaged/ (kept for inspection, out of orbax's way)."""
        if not steps:
            return
        if jax.process_index() == 0:
            aside = os.path.join(self.root, "damaged")
            os.makedirs(aside, exist_ok=True)
            for step in steps:
                target = os.path.join(aside, f"last-{step}")
                while os.path.exists(target):
                    target += "+"
                os.rename(os.path.join(self.root, "last", str(step)), target)
                print(f"warning: moved the damaged checkpoint of step {step} to {target}", file=sys.stderr)
        if jax.process_count() > 1:  # the others list the steps once process 0 has moved them
            multihost_utils.sync_global_devices("checkpoints: damaged steps set aside")
        self.last.reload()

    def has_best(self) -> bool:
        return self.best.latest_step() is not None

    def finish(self, series: ocp.CheckpointManager) -> None:
        """Wait for a series' save in flight; a failed write (a full disk) is one line, and the steps
        before it stay as they were."""
        try:
            series.wait_until_finished()
        except OSError as e:
            raise UserError(f"could not write a checkpoint under {series.directory} ({first_line(e)}); the "
                            "earlier checkpoints are intact: free space (or fix the error) and rerun to resume") from None

    def wait(self) -> None:
        with ctrl_c_after():
            self.finish(self.last)
            self.finish(self.best)

    def close(self) -> None:
        self.wait()
        self.last.close()
        self.best.close()

    def restore_params(self, params, rest, sharding, which: str = "best"):
        """(params, rest) of the newest intact `which` checkpoint (best falls back to last), shaped like
        the abstract `params` and `rest` and placed with `sharding`; the optimizer state and step stay
        on disk."""
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                              {"params": params, "rest": rest})
        args = ocp.args.Composite(state=ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True))
        found = self.intact(("best", "last") if which == "best" else ("last",),
                            lambda series, step: series.restore(step, args=args))
        if found is None:
            raise UserError(f"{self.root} holds no checkpoint to restore")
        out = found[2]
        return out["state"]["params"], out["state"]["rest"]


@contextlib.contextmanager
def ctrl_c_after() -> Iterator[None]:
    """Hold a Ctrl-C until the block ends: a save is started, or waited for, whole. Interrupted
    inside orbax's wait, orbax logs the save as failed, with a traceback, though its files are
    fine. Only the main thread handles signals, so elsewhere this does nothing."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is None or threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        signal.raise_signal(signal.SIGINT)  # now to the handler that was in place


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__
