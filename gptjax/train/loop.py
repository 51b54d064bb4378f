"""The training loop: batches -> compiled steps -> logs, evaluations, checkpoints, early stop.

Steps run `train.steps_per_call` at a time inside one compiled call; logging, evaluation and
checkpoints happen at the call boundaries where their interval is crossed, which are the
same boundaries in an uninterrupted and in a resumed run.
"""

from __future__ import annotations

import json
import math
import os
import time

import jax
import numpy as np
from tqdm import tqdm

from gptjax.data import batches
from gptjax.data.prepare import Corpus
from gptjax.eval.scoring import evaluate, make_eval_step
from gptjax.train import mesh as mesh_lib
from gptjax.train import mfu, profiling
from gptjax.train.batch_ramp import BatchSchedule
from gptjax.train.checkpoints import Checkpoints
from gptjax.train.optimizer import learning_rate_schedule
from gptjax.train.step import TrainState, make_train_step


class MetricsLog:
    """metrics.jsonl: one JSON object a line; only process 0 writes."""

    def __init__(self, path: str, resume_step: int):
        self.path = path
        self.write = jax.process_index() == 0
        if self.write and os.path.exists(path):  # drop lines past the checkpoint we resume from
            with open(path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["step"] <= resume_step]
            with open(path, "w") as f:
                f.writelines(kept)

    def log(self, record: dict) -> None:
        if self.write:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def crossed(before: int, after: int, every: int) -> bool:
    return every > 0 and after // every > before // every


class Trainer:
    """Owns the compiled steps and the fixed validation batches of one run."""

    def __init__(self, config, corpus: Corpus, mesh, graphdef, tx, shardings: TrainState):
        self.c, self.corpus, self.mesh = config, corpus, mesh
        tc, block = config.train, config.model.block_size
        self.batch_sharding = mesh_lib.batch_sharding(mesh, leading=2)
        self.row_sharding = mesh_lib.batch_sharding(mesh)
        self.train_step = jax.jit(make_train_step(graphdef, tx, tc, config.seed),
                                  in_shardings=(shardings, self.batch_sharding),
                                  out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0)
        self.eval_step = jax.jit(make_eval_step(graphdef, corpus.token_bytes, corpus.token_chars),
                                 in_shardings=(shardings.params, shardings.rest, self.row_sharding, self.row_sharding),
                                 out_shardings=mesh_lib.replicated(mesh))
        weights = np.ones((config.eval.batch_size, block), np.float32)
        self.val_batches = [(b, jax.make_array_from_process_local_data(
            self.row_sharding, weights[batches.process_rows(config.eval.batch_size)], weights.shape))
            for b in batches.eval_batches(corpus.tokens["val"], config.seed, tc.eval_batches,
                                          config.eval.batch_size, block, self.row_sharding)]
        self.schedule = learning_rate_schedule(tc)
        self.batch_sizes = BatchSchedule(tc.batch_ramp, tc.batch_size)
        self.flops_per_token = mfu.flops_per_token(config.model, corpus.tokenizer.vocab_size, config.seed)
        self.peak_flops = mfu.device_peak(tc.peak_flops)

    def batch(self, step: int, n: int) -> jax.Array:
        tc = self.c.train
        return batches.train_batch(self.corpus.tokens["train"], self.c.seed, step, n, tc.grad_accum,
                                   self.batch_sizes.size(step), self.c.model.block_size, self.batch_sharding)

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
        batch_list = batches.sequential_batches(self.corpus.tokens[split], self.c.model.block_size,
                                                self.c.eval.batch_size, self.c.eval.max_tokens, self.row_sharding)
        return evaluate(self.eval_step, params, rest, batch_list)

    def run(self, state: TrainState, meta: dict, checkpoints: Checkpoints, log: MetricsLog) -> tuple[TrainState, dict]:
        """Train from meta['step'] to train.steps (or early stop / time budget); returns the last state."""
        tc = self.c.train
        step = int(meta["step"])
        started, wall_before = time.time(), meta["wall_seconds"]
        pending: list[jax.Array] = []
        last_log = (self.tokens_before(step), time.time())
        bar = tqdm(total=tc.steps, initial=step, desc="train", unit="step", dynamic_ncols=True,
                   disable=jax.process_index() != 0 or None)
        stop = ""
        trace = profiling.StepTrace(os.path.join(os.path.dirname(log.path), "profile"), tc.profile_steps)
        while step < tc.steps and not stop:
            n = int(min(tc.steps_per_call, tc.steps - step, self.batch_sizes.stage_end(step) - step))
            trace.before(step)
            state, losses = self.train_step(state, self.batch(step, n))
            losses.block_until_ready()  # wall-clock figures count finished work, not queued work
            trace.after(step + n, losses)
            pending.append(losses)
            before, step = step, step + n
            meta.update(step=step, tokens_seen=self.tokens_before(step),
                        wall_seconds=wall_before + time.time() - started)
            if tc.max_minutes and meta["wall_seconds"] > 60 * tc.max_minutes:
                stop = f"time budget of {tc.max_minutes} minutes reached"
            record: dict = {}
            if crossed(before, step, tc.log_every) or step == tc.steps or stop:
                train_loss = float(np.mean(np.concatenate(jax.device_get(pending))))
                pending.clear()
                now = time.time()
                rate = (meta["tokens_seen"] - last_log[0]) / max(now - last_log[1], 1e-9)
                last_log = (meta["tokens_seen"], now)
                record.update(train_loss=train_loss, lr=float(self.schedule(step - 1)), tokens_per_sec=rate,
                              **mfu.utilisation(rate, self.flops_per_token, self.peak_flops, self.mesh.size))
                bar.set_postfix(loss=f"{train_loss:.3f}", tok_s=f"{rate:,.0f}")
                if not math.isfinite(train_loss):
                    stop = f"train loss is {train_loss} at step {step}; lower train.learning_rate"
            improved = False
            if crossed(before, step, tc.eval_every) or step == tc.steps or stop:
                val = self.validate(state)
                record.update({f"val_{k}": v for k, v in val.items() if k != "tokens"})
                record["val_bpc"] = val["bits_per_char"]
                if tc.stop_below_bpc and val["bits_per_char"] < tc.stop_below_bpc:
                    # The sampled batches only nominate the step: the target is a whole-split figure.
                    whole = self.full_split(state.params, state.rest, "val")["bits_per_char"]
                    record["val_full_bpc"] = whole
                    if whole < tc.stop_below_bpc:
                        stop = f"validation reached {whole:.4f} < {tc.stop_below_bpc} bits/char on the whole split"
                improved = val["loss"] < meta["best_val_loss"]
                if improved:
                    meta.update(best_val_loss=val["loss"], best_step=step, evals_since_best=0)
                else:
                    meta["evals_since_best"] += 1
                    if tc.early_stop_patience and meta["evals_since_best"] >= tc.early_stop_patience:
                        stop = f"early stop: no improvement in {tc.early_stop_patience} evaluations"
                bar.write(f"step {step}: val loss {val['loss']:.4f}, {val['bits_per_char']:.3f} bits/char")
            if record:
                log.log({"step": step, "tokens_seen": meta["tokens_seen"],
                         "elapsed": round(meta["wall_seconds"], 2), **record})
            if crossed(before, step, tc.checkpoint_every) or improved or step == tc.steps or stop:
                checkpoints.save(state, dict(meta), best=improved)
        trace.stop(state)
        bar.close()
        meta["stop_reason"] = stop or "completed"
        checkpoints.save(state, dict(meta))
        checkpoints.wait()
        return state, meta
