"""What a person watching a run sees between evaluations.

On a terminal a tqdm bar advances after every compiled call, with tqdm's own steps/s and ETA
and the latest loss, learning rate and tokens/s; in a log file (output not a terminal) a
plain line every `train.progress_every_seconds` says the same, since a bar's carriage returns
would fill a file with one long line.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


def duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    def __init__(self, total: int, initial: int, every_seconds: float, enabled: bool = True,
                 stream: TextIO | None = None):
        self.stream = stream or sys.stdout
        self.total, self.every_seconds, self.enabled = total, every_seconds, enabled
        self.tty = enabled and self.stream.isatty()
        self.bar = tqdm(total=total, initial=initial, desc="train", unit="step", file=self.stream,
                        dynamic_ncols=True, disable=not self.tty)
        self.last = (initial, time.time())  # (step, time) of the last plain line

    def update(self, step: int, n: int, loss: float, lr: float, tokens_per_sec: float) -> None:
        """After a call of `n` steps that ended at `step`."""
        if not self.enabled:
            return
        if self.tty:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}", tok_s=f"{tokens_per_sec:,.0f}")
            return
        now = time.time()
        if now - self.last[1] < self.every_seconds and step < self.total:
            return
        steps_per_sec = (step - self.last[0]) / max(now - self.last[1], 1e-9)
        eta = (self.total - step) / steps_per_sec if steps_per_sec > 0 else 0.0
        self.last = (step, now)
        self.write(f"step {step}/{self.total}: loss {loss:.4f}, lr {lr:.2e}, {steps_per_sec:.2f} steps/s, "
                   f"{tokens_per_sec:,.0f} tokens/s, ETA {duration(eta)}")

    def write(self, line: str) -> None:
        if self.tty:
            self.bar.write(line, file=self.stream)
        elif self.enabled:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
