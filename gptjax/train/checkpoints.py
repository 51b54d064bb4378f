"""orbax checkpoints: the last N states for resuming and the best one for evaluation.

A checkpoint holds the whole train state (params, optimizer state, step) and the loop's
`LoopState` as JSON (tokens seen, best validation loss, patience, time so far, stop reason).
Batches and dropout keys are functions of (seed, step), so the step is the whole data and RNG
position.
"""

from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp

from gptjax.train.loop_state import LoopState
from gptjax.train.step import TrainState


def manager(root: str, name: str, keep: int) -> ocp.CheckpointManager:
    """One checkpoint series under root/name.

    Across processes orbax names its commit barrier after the step, so `last` and `best`
    saving the same step at once would meet at one barrier; the prefix keeps them apart.
    """
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True, multiprocessing_options=ocp.options.MultiprocessingOptions(
            barrier_sync_key_prefix=name))
    return ocp.CheckpointManager(os.path.join(root, name), options=options)


class Checkpoints:
    def __init__(self, workdir: str, keep: int):
        root = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.last = manager(root, "last", keep)
        self.best = manager(root, "best", 1)

    def latest_step(self) -> int | None:
        return self.last.latest_step()

    def save(self, state: TrainState, loop: LoopState, best: bool = False) -> None:
        """Save asynchronously; `best` also replaces the best checkpoint."""
        step = int(loop.step)
        args = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(loop.to_json()))
        for manager in (self.last, self.best) if best else (self.last,):
            if manager.latest_step() != step:
                manager.save(step, args=args)

    def restore(self, target: TrainState, which: str = "last", step: int | None = None) -> tuple[TrainState, LoopState]:
        """(state, loop state) restored onto `target`'s shapes and shardings (any mesh shape)."""
        manager = self.best if which == "best" else self.last
        step = manager.latest_step() if step is None else step
        out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                            meta=ocp.args.JsonRestore()))
        return out["state"], LoopState.from_json(out["meta"])

    def loop_state(self) -> LoopState | None:
        """The latest checkpoint's loop state alone (no arrays are read); None before the first."""
        step = self.last.latest_step()
        if step is None:
            return None
        return LoopState.from_json(self.last.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"])

    def has_best(self) -> bool:
        return self.best.latest_step() is not None

    def wait(self) -> None:
        self.last.wait_until_finished()
        self.best.wait_until_finished()

    def close(self) -> None:
        self.last.close()
        self.best.close()

    def restore_params(self, params, rest, sharding, which: str = "best"):
        """(params, rest) of the latest `which` checkpoint, shaped like the abstract `params` and
        `rest` and placed with `sharding`; the optimizer state and step stay on disk."""
        manager = self.best if which == "best" else self.last
        target = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sharding),
                              {"params": params, "rest": rest})
        out = manager.restore(manager.latest_step(), args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True)))
        return out["state"]["params"], out["state"]["rest"]
