"""Batch-size schedule: smaller batches for the first steps, then train.batch_size.

Early in training the gradient is large against its noise, so a small batch can buy nearly the
progress of a large one at a fraction of the cost; the batch worth paying for grows as the loss
falls (GPT-3 ramped its batch size for this reason). The stages are piecewise constant, so the
train step compiles once per stage, and the batch of a step depends only on the step number,
so a resumed run sees the same batches.
"""

from __future__ import annotations

import math

from gptjax.errors import UserError


def parse(ramp: str) -> list[tuple[int, int]]:
    """'8:100,16:200' -> [(8, 100), (16, 200)]: 8 rows for 100 steps, then 16 for 200."""
    if not ramp.strip():
        return []
    stages = []
    for part in ramp.split(","):
        try:
            rows, steps = (int(x) for x in part.split(":"))
        except ValueError:
            rows = steps = 0
        if rows <= 0 or steps <= 0:
            raise UserError(f"train.batch_ramp={ramp!r}: stage {part.strip()!r} is not rows:steps with two "
                            "positive integers; write it as '8:100,16:200'")
        stages.append((rows, steps))
    return stages


class BatchSchedule:
    """Rows of each train step, and the tokens trained on before a step."""

    def __init__(self, ramp: str, batch_size: int):
        self.starts, self.rows = [], []
        first = 0
        for rows, steps in parse(ramp) + [(batch_size, 0)]:
            self.starts.append(first)
            self.rows.append(rows)
            first += steps

    def stage(self, step: int) -> int:
        return max(i for i, start in enumerate(self.starts) if start <= step)

    def size(self, step: int) -> int:
        return self.rows[self.stage(step)]

    def stage_end(self, step: int) -> float:
        """First step of the next stage (infinite in the last)."""
        i = self.stage(step)
        return self.starts[i + 1] if i + 1 < len(self.starts) else math.inf

    def rows_before(self, step: int) -> int:
        """Sequences trained on in steps 0 .. step - 1."""
        total = 0
        for start, end, rows in zip(self.starts, self.starts[1:] + [math.inf], self.rows):
            total += rows * max(0, min(step, end) - start)
        return int(total)
