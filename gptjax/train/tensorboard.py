"""TensorBoard scalars of a run, next to metrics.jsonl (which stays the record).

The event files go into the workdir itself, so `tensorboard --logdir runs` shows each run under
its own name. tensorboardX writes them without TensorFlow.
"""

from __future__ import annotations

from tensorboardX import SummaryWriter

# metrics.jsonl keys that are not curves
NOT_SCALARS = ("step",)


def tag(key: str) -> str:
    """train_loss -> train/loss, val_bits_per_char -> val/bits_per_char, lr -> train/lr."""
    for split in ("train", "val"):
        if key.startswith(f"{split}_"):
            return f"{split}/{key.removeprefix(f'{split}_')}"
    return f"train/{key}"


class Scalars:
    def __init__(self, workdir: str, resume_step: int, enabled: bool = True):
        # purge_step: TensorBoard hides what an interrupted process wrote past the checkpoint we resume from.
        self.writer = SummaryWriter(workdir, purge_step=resume_step or None) if enabled else None

    def log(self, record: dict) -> None:
        """Every number of one metrics record, at its step."""
        if self.writer is None:
            return
        for key, value in record.items():
            if key not in NOT_SCALARS and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(tag(key), value, record["step"])

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
