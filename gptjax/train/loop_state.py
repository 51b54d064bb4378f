"""Where a run stands beyond its arrays: one small record, checkpointed whole with the train state.

The train state (params, optimizer state, step) says where the optimizer is; `LoopState` says
where the loop is: tokens seen, time spent, the best validation so far, patience, skipped
updates and, once the run has stopped, why. Batches and dropout keys are functions of
(seed, step), so these two records are the whole position of a run.
"""

from __future__ import annotations

import dataclasses
import math
import time

COMPLETED = "completed"


@dataclasses.dataclass
class LoopState:
    step: int = 0
    tokens_seen: int = 0
    wall_seconds: float = 0.0         # the run's clock over every process that worked on it
    best_val_loss: float = math.inf
    best_step: int = 0
    evals_since_best: int = 0
    skipped_steps: int = 0            # updates skipped for a non-finite loss or gradient, in all
    skipped_in_a_row: int = 0
    stop_reason: str = ""             # "" while the run goes on

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, saved: dict) -> LoopState:
        """A saved record; keys written by older versions are dropped, missing ones take their default."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})

    def finished(self, steps: int) -> bool:
        """Stopped early (for good), or trained all of `steps`: a rerun must not train on."""
        return (bool(self.stop_reason) and self.stop_reason != COMPLETED) or self.step >= steps


class RunClock:
    """Seconds of a run so far: what earlier processes spent (checkpointed) plus this process's."""

    def __init__(self, before: float, started: float):
        self.before, self.started = before, started

    def seconds(self) -> float:
        return self.before + time.time() - self.started
