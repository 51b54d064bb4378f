"""An optional `jax.profiler` trace of a few train steps, for TensorBoard / Perfetto.

The trace starts at the run's first compiled call and stops at the first call boundary at
least `steps` steps later, after the device has finished them. Only process 0 traces:
processes on one machine would otherwise write over each other's files.
"""

from __future__ import annotations

import jax


class StepTrace:
    def __init__(self, directory: str, steps: int):
        self.directory, self.steps = directory, steps
        self.first: int | None = None
        self.active = False

    def before(self, step: int) -> None:
        """Call before the train step that starts at `step`."""
        if self.steps > 0 and self.first is None and jax.process_index() == 0:
            jax.profiler.start_trace(self.directory)
            self.first, self.active = step, True

    def after(self, step: int, outputs) -> None:
        """Call after the call that ended at `step`, with its outputs."""
        if self.active and step - self.first >= self.steps:
            self.stop(outputs)

    def stop(self, outputs=None) -> None:
        if self.active:
            jax.block_until_ready(outputs)
            jax.profiler.stop_trace()
            self.active = False
            print(f"profile written to {self.directory} (open it with TensorBoard or xprof)")
