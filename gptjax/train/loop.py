"""The training loop: batches -> compiled steps -> logs, evaluations, checkpoints, stop.

Steps run `train.steps_per_call` at a time inside one compiled call; logging, evaluation and
checkpoints happen at the call boundaries where their interval is crossed, which are the
same boundaries in an uninterrupted and in a resumed run.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time

import jax
import numpy as np

from gptjax.data import grain_windows
from gptjax.data.prepare import Corpus
from gptjax.errors import UserError
from gptjax.eval.scoring import evaluate
from gptjax.train import layer_norms, model_steps
from gptjax.train import mesh as mesh_lib
from gptjax.train import mfu, profiling
from gptjax.train.batch_ramp import BatchSchedule
from gptjax.train.batch_source import batch_source
from gptjax.train.checkpoints import Checkpoints
from gptjax.train.loop_state import COMPLETED, LoopState, RunClock
from gptjax.train.optimizer import learning_rate_schedule
from gptjax.train.progress import Progress
from gptjax.train.step import TrainState
from gptjax.train.tensorboard import Scalars


class MetricsLog:
    """metrics.jsonl (one JSON object a line) and the same numbers as TensorBoard scalars; only
    process 0 writes."""

    def __init__(self, workdir: str, resume_step: int):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self.write = jax.process_index() == 0
        if self.write and os.path.exists(self.path):  # drop lines past the checkpoint we resume from
            kept = [line for line, record in read_records(self.path) if record["step"] <= resume_step]
            with open(self.path, "w") as f:
                f.writelines(kept)
        self.scalars = Scalars(workdir, resume_step, enabled=self.write)

    def log(self, record: dict) -> None:
        if self.write:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
            self.scalars.log(record)

    def close(self) -> None:
        self.scalars.close()


def read_records(path: str) -> list[tuple[str, dict]]:
    """(line, record) of every line; a torn last line (a process killed mid-write) is dropped with a
    warning, a damaged line before it is refused."""
    with open(path) as f:
        lines = [line if line.endswith("\n") else line + "\n" for line in f if line.strip()]
    out = []
    for i, line in enumerate(lines):
        try:
            out.append((line, json.loads(line)))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise UserError(f"{path} line {i + 1} is not JSON; repair or move the file to resume") from None
            print(f"warning: dropped the torn last line of {path} (written when a run was killed)", file=sys.stderr)
    return out


def crossed(before: int, after: int, every: int) -> bool:
    return every > 0 and after // every > before // every


class Trainer:
    """Owns the compiled steps and the fixed validation batches of one run (text windows, or
    conversation rows scored on assistant tokens: see train/batch_source.py)."""

    def __init__(self, config, corpus: Corpus, mesh, graphdef, tx, shardings: TrainState):
        self.c, self.corpus, self.mesh = config, corpus, mesh
        tc = config.train
        self.batch_sharding = mesh_lib.batch_sharding(mesh, leading=2)
        self.row_sharding = mesh_lib.batch_sharding(mesh)
        self.train_step = jax.jit(model_steps.train_step(config, graphdef, tx, corpus.tokenizer.vocab_size),
                                  in_shardings=(shardings, self.batch_sharding),
                                  out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0)
        self.source = batch_source(config, corpus, self.batch_sharding, self.row_sharding)
        eval_step = model_steps.eval_step(config, graphdef, corpus.token_bytes, corpus.token_chars)
        eval_shardings = (shardings.params, shardings.rest, *[self.row_sharding] * self.source.eval_arrays)
        self.eval_step = jax.jit(eval_step, in_shardings=eval_shardings, out_shardings=mesh_lib.replicated(mesh))
        self.layer_norms = jax.jit(layer_norms.make_layer_norms(graphdef, eval_step), in_shardings=eval_shardings,
                                   out_shardings=mesh_lib.replicated(mesh)) if tc.log_layer_norms else None
        self.val_batches = self.source.validation()
        self.schedule = learning_rate_schedule(tc)
        self.batch_sizes = BatchSchedule(tc.batch_ramp, tc.batch_size)
        self.flops_per_token = mfu.flops_per_token(config.model, corpus.tokenizer.vocab_size, config.seed)
        self.peak_flops = mfu.device_peak(tc.peak_flops)
        self.grain = (grain_windows.configured_batches(config, corpus.tokens["train"], self.batch_sizes.size)
                      if hasattr(corpus, "tokens") else None)  # grain reads text windows only

    def batch(self, step: int, n: int):
        if self.grain is not None:
            return self.grain.train_batch(step, n, self.batch_sharding)
        return self.source.train(step, n, self.batch_sizes.size(step))

    def tokens_before(self, step: int) -> int:
        return self.batch_sizes.rows_before(step) * self.c.model.block_size

    def memory_report(self, state: TrainState) -> str:
        """Compiled memory use of one call at the full batch size, printed before step 1 (compiles the step once)."""
        n = min(self.c.train.steps_per_call, self.c.train.steps)
        if n == 0:
            return "no train steps to compile"
        full = self.batch_sizes.starts[-1]
        analysis = self.train_step.lower(state, self.batch(full, n)).compile().memory_analysis()
        if analysis is None:
            return "compiled memory use: not reported by this backend"
        mib = lambda b: b / 2**20  # noqa: E731
        return (f"compiled train step: arguments {mib(analysis.argument_size_in_bytes):.1f} MiB, "
                f"temporaries {mib(analysis.temp_size_in_bytes):.1f} MiB, "
                f"outputs {mib(analysis.output_size_in_bytes):.1f} MiB")

    def validate(self, state: TrainState) -> dict:
        return evaluate(self.eval_step, state.params, state.rest, self.val_batches)

    def full_split(self, params, rest, split: str) -> dict:
        """Score every token of a split once (or its first eval.max_tokens)."""
        return evaluate(self.eval_step, params, rest, self.source.whole_split(split))

    def run(self, state: TrainState, loop: LoopState, clock: RunClock, checkpoints: Checkpoints,
            log: MetricsLog) -> TrainState:
        """Train from loop.step to train.steps (or a stop); updates `loop` and returns the last state."""
        tc = self.c.train
        if not loop.finished(tc.steps):
            loop.stop_reason = ""  # a run that completed its steps goes on when given more
        main_process = jax.process_index() == 0
        window = Window(self.tokens_before(loop.step))
        progress = Progress(tc.steps, loop.step, tc.progress_every_seconds, enabled=main_process)
        trace = profiling.StepTrace(os.path.join(os.path.dirname(log.path), "profile"), tc.profile_steps)
        if self.layer_norms is not None and loop.step == 0:  # the norms at initialisation
            log.log({"step": 0, "tokens_seen": 0, "elapsed": round(clock.seconds(), 2), **self.layer_figures(state)})
        while not loop.finished(tc.steps):
            before = loop.step
            n = int(min(tc.steps_per_call, tc.steps - before, self.batch_sizes.stage_end(before) - before))
            trace.before(before)
            started = time.time()
            state, metrics = self.train_step(state, self.batch(before, n))
            metrics = jax.device_get(metrics)  # waits: wall-clock figures count finished work, not queued work
            trace.after(before + n, state.step)
            loop.step, loop.tokens_seen, loop.wall_seconds = before + n, self.tokens_before(before + n), clock.seconds()
            window.add(metrics)
            fault = count_skips(loop, metrics, tc.max_nonfinite_steps)
            progress.update(loop.step, n, mean_where_finite(metrics, "loss"), float(self.schedule(loop.step - 1)),
                            (loop.tokens_seen - self.tokens_before(before)) / max(time.time() - started, 1e-9))
            stop = self.out_of_time(loop)
            record: dict = {}
            if crossed(before, loop.step, tc.log_every) or loop.step == tc.steps or stop or fault:
                record.update(self.train_figures(window, loop))
                record.update(self.layer_figures(state) if self.layer_norms is not None else {})
            improved = False
            if not fault and (crossed(before, loop.step, tc.eval_every) or loop.step == tc.steps or stop):
                figures, improved, stop = self.validation_figures(state, loop, stop, progress)
                record.update(figures)
            if record:
                log.log({"step": loop.step, "tokens_seen": loop.tokens_seen, "elapsed": round(loop.wall_seconds, 2),
                         **record})
            if fault:  # the state is as it was before the skipped updates; the last checkpoint stays the newest
                progress.close()
                checkpoints.wait()
                raise UserError(fault)
            loop.stop_reason = stop or (COMPLETED if loop.step >= tc.steps else "")
            if crossed(before, loop.step, tc.checkpoint_every) or improved or loop.stop_reason:
                checkpoints.save(state, loop, best=improved)
        trace.stop(state)
        progress.close()
        checkpoints.wait()
        if self.layer_norms is not None and log.write:
            layer_norms.write_plot(os.path.dirname(log.path), [r for _, r in read_records(log.path)])
        return state

    def out_of_time(self, loop: LoopState) -> str:
        minutes = self.c.train.max_minutes
        return f"time budget of {minutes} minutes reached" if minutes and loop.wall_seconds > 60 * minutes else ""

    def train_figures(self, window: "Window", loop: LoopState) -> dict:
        """The metrics record's training fields: loss, learning rate, throughput, MFU, gradient norm."""
        loss, grad_norm, skipped, rate = window.take(loop.tokens_seen)
        record = {"train_loss": loss, "lr": float(self.schedule(loop.step - 1)), "tokens_per_sec": rate,
                  **mfu.utilisation(rate, self.flops_per_token, self.peak_flops, self.mesh.size), "grad_norm": grad_norm}
        if skipped:
            record["skipped_steps"] = skipped
        return record

    def validation_figures(self, state: TrainState, loop: LoopState, stop: str,
                           progress: Progress) -> tuple[dict, bool, str]:
        """Score the validation batches; (record fields, improved, stop reason) after the target and patience."""
        tc = self.c.train
        val = self.validate(state)
        record = {f"val_{k}": v for k, v in val.items() if k != "tokens"}
        record["val_bpc"] = val["bits_per_char"]
        if tc.stop_below_bpc and val["bits_per_char"] < tc.stop_below_bpc:
            # The sampled batches only nominate the step: the target is a whole-split figure.
            whole = self.full_split(state.params, state.rest, "val")["bits_per_char"]
            record["val_full_bpc"] = whole
            if whole < tc.stop_below_bpc:
                stop = f"validation reached {whole:.4f} < {tc.stop_below_bpc} bits/char on the whole split"
        improved = val["loss"] < loop.best_val_loss
        if improved:
            loop.best_val_loss, loop.best_step, loop.evals_since_best = val["loss"], loop.step, 0
        else:
            loop.evals_since_best += 1
            if tc.early_stop_patience and loop.evals_since_best >= tc.early_stop_patience:
                stop = f"early stop: no improvement in {tc.early_stop_patience} evaluations"
        progress.write(f"step {loop.step}: val loss {val['loss']:.4f}, {val['bits_per_char']:.3f} bits/char")
        return record, improved, stop

    def layer_figures(self, state: TrainState) -> dict:
        """Per-layer gradient, weight and activation norms on the first validation batch."""
        return layer_norms.figures(self.layer_norms, state.params, state.rest, *self.val_batches[0])


class Window:
    """The step metrics since the last metrics record, and when that record was written."""

    def __init__(self, tokens_seen: int):
        self.metrics: list[dict] = []
        self.since = (tokens_seen, time.time())

    def add(self, metrics: dict) -> None:
        self.metrics.append(metrics)

    def take(self, tokens_seen: int) -> tuple[float, float, int, float]:
        """(mean train loss, mean gradient norm, skipped updates, tokens/s) of the window, which then restarts."""
        joined = {k: np.concatenate([m[k] for m in self.metrics]) for k in self.metrics[0]}
        now = time.time()
        rate = (tokens_seen - self.since[0]) / max(now - self.since[1], 1e-9)
        self.metrics, self.since = [], (tokens_seen, now)
        return (mean_where_finite(joined, "loss"), mean_where_finite(joined, "grad_norm"),
                int((~joined["finite"]).sum()), rate)


def mean_where_finite(metrics: dict, key: str) -> float:
    """Mean of a step metric over the steps whose update was applied (NaN if none was)."""
    values = metrics[key][metrics["finite"]]
    return float(np.mean(values)) if values.size else math.nan


def count_skips(loop: LoopState, metrics: dict, limit: int) -> str:
    """Count the skipped updates of one call; past `limit` in a row, the line the run stops with."""
    first = loop.step - len(metrics["finite"]) + 1
    for i, finite in enumerate(metrics["finite"]):
        loop.skipped_in_a_row = 0 if finite else loop.skipped_in_a_row + 1
        loop.skipped_steps += int(not finite)
        if loop.skipped_in_a_row >= limit:
            quantity = ("loss" if not np.isfinite(metrics["loss"][i]) else "gradient norm"
                        if not np.isfinite(metrics["grad_norm"][i]) else "parameter norm after the update")
            return (f"training diverged: the {quantity} was not finite at step {first + i}, {limit} skipped updates "
                    f"in a row (train.max_nonfinite_steps); lower train.learning_rate, add train.warmup_steps or "
                    f"set train.grad_clip, then rerun to resume from the last checkpoint")
    return ""
