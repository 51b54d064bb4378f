"""The main job, top to bottom: data -> model -> train -> evaluate -> samples -> report.

`run(config, workdir)` is everything `python -m gptjax.main` does. Re-running it on the
same workdir resumes from the last checkpoint and continues the same trajectory; a run that has
finished or stopped early stays so and is only reported.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import tempfile
import time
from typing import Iterable

import jax
import numpy as np

from gptjax.data.chat_template import write_chat_record
from gptjax.data.prepare import Corpus, prepare
from gptjax.errors import UserError
from gptjax.generate.reference import generate_uncached
from gptjax.train import (adapters, config_checks, distributed, environment, init_from, ngram_figures, report,
                          workdir_lock)
from gptjax.train import mesh as mesh_lib
from gptjax.train import state as state_lib
from gptjax.train.batch_source import describe
from gptjax.train.checkpoints import Checkpoints
from gptjax.train.loop import MetricsLog, Trainer
from gptjax.train.loop_state import COMPLETED, LoopState, RunClock
from gptjax.train.optimizer import build_optimizer
from gptjax.workdir import check_workdir, write_json


def run(config, workdir: str, overrides: Iterable[str] = ()) -> dict:
    """Train and evaluate the model `config` describes; returns the summary it writes.
    `overrides`: the dotted config keys set on the command line (see train/init_from.py)."""
    started = time.time()
    config_checks.check_config(config)
    distributed.initialize(config)  # before anything starts a JAX backend
    config, source = init_from.resolve(config, overrides)  # the source's architecture and tokenizer
    main_process = jax.process_index() == 0
    check_workdir(workdir)  # a file, or a directory that cannot be written: one line, nothing touched
    os.makedirs(workdir, exist_ok=True)
    if main_process:
        workdir_lock.hold(workdir)  # before anything in the workdir is read or written
    config_checks.check_workdir(config, workdir)
    mesh = mesh_lib.build_mesh(config.mesh)
    config_checks.check_batch(config, mesh)  # before anything in the workdir is written
    checkpoints = Checkpoints(workdir, config.train.keep_checkpoints)
    saved = checkpoints.loop_state()
    summary_path = os.path.join(workdir, "summary.json")
    if saved is not None and saved.finished(config.train.steps) and os.path.exists(summary_path):
        checkpoints.close()
        return finished_summary(workdir, saved, summary_path)

    corpus = prepare(config.data, config.seed, config.model.block_size,
                     tokenizer=source.tokenizer if source else None)
    config_checks.check_corpus(config, corpus)
    if main_process:
        save_tokenizer(corpus, workdir)
        write_chat_record(workdir, corpus)
        write_json(os.path.join(workdir, "config.json"), config.to_dict())
        write_json(os.path.join(workdir, "environment.json"),
                   environment.environment(config.seed) | init_from.provenance(source))

    vocab = corpus.tokenizer.vocab_size
    lora = adapters.settings(config)  # None, or adapters over a frozen base: params are the adapters
    graphdef, abstract_params, abstract_rest = state_lib.abstract_model(config.model, vocab, config.seed, lora)
    tx = build_optimizer(config.train, abstract_params)
    shardings = state_lib.state_shardings(graphdef, abstract_params, abstract_rest, tx, mesh)
    if saved is not None:
        target = state_lib.restore_target(config.model, vocab, config.seed, tx, shardings, lora)
        state, loop = checkpoints.restore(target)
        print(f"resuming from step {loop.step} in {workdir}")
    elif source is not None and lora is not None:  # adapters over the source's weights
        state = state_lib.init_state(config.model, vocab, config.seed, tx, shardings, lora)
        state, loop = adapters.place_base(state, source.params), LoopState()
    elif source is not None:
        state, loop = init_from.initial_state(source, config, vocab, tx, shardings), LoopState()
    else:
        state, loop = state_lib.init_state(config.model, vocab, config.seed, tx, shardings, lora), LoopState()
    n_params = state_lib.count_params(abstract_params)
    print(f"model: {config.model.kind}, {n_params:,} parameters; data: {describe(corpus)}; "
          f"mesh {dict(mesh.shape)}")
    if lora is not None:
        print(adapters.describe(lora, abstract_params, abstract_rest))

    trainer = Trainer(config, corpus, mesh, graphdef, tx, shardings)
    print(trainer.memory_report(state))
    if source is not None and saved is None:  # the base's figures on this data, for the report
        init_from.write_base(workdir, trainer.full_split(state.params, state.rest, "val"),
                             write_samples(config, corpus, graphdef, state.params, state.rest, workdir, "base"))
    clock = RunClock(loop.wall_seconds, started)  # a run's clock includes preparing its data, in every process
    log = MetricsLog(workdir, loop.step)
    try:
        state = trainer.run(state, loop, clock, checkpoints, log)
    finally:  # a run that stops on an error keeps the scalars it wrote
        log.close()

    if checkpoints.has_best():
        target = state_lib.restore_target(config.model, vocab, config.seed, tx, shardings, lora)
        best, _ = checkpoints.restore(target, which="best")
        params, rest = best.params, best.rest
    else:
        params, rest = state.params, state.rest
    checkpoints.close()
    final = {split: trainer.full_split(params, rest, split) for split in ("val", "test")
             if trainer.source.has_split(split)}
    samples = write_samples(config, corpus, graphdef, params, rest, workdir)  # every process computes

    summary = {"params": n_params, "tokens_seen": int(loop.tokens_seen), "steps": int(loop.step),
               "wall_seconds": round(clock.seconds(), 1), "train_seconds": round(loop.wall_seconds, 1),
               "best_val_loss": loop.best_val_loss, "best_step": loop.best_step,
               "stop_reason": loop.stop_reason or COMPLETED}
    if loop.skipped_steps:
        summary["skipped_steps"] = loop.skipped_steps
    summary.update(adapters.save_product(config, workdir, graphdef, params, rest))  # {} without LoRA
    for split, scores in final.items():
        summary.update({f"{split}_loss": scores["loss"], f"{split}_bpc": scores["bits_per_char"],
                        f"{split}_bpb": scores["bits_per_byte"], f"{split}_perplexity": scores["perplexity"]})
    if main_process:
        write_json(os.path.join(workdir, "summary.json"), summary)
        # The n-grams count the validation text, not the replies that data.pairs=dialogues scores.
        ngrams = {} if config.data.pairs == "dialogues" else ngram_figures.figures(corpus, config, workdir)
        report.write_report(workdir, config, summary, getattr(corpus, "cleaning", {}), samples, ngrams,
                            init_from.read_base(workdir))
        scores = "".join(f", {split} {summary[f'{split}_bpc']:.3f} bits/char" for split in final)
        print(f"done: best val loss {summary['best_val_loss']:.4f}{scores}; report in {os.path.join(workdir, 'report.md')}")
    return summary


def finished_summary(workdir: str, loop: LoopState, summary_path: str) -> dict:
    """A rerun of a finished or stopped run trains no further: it says so and returns the run's summary."""
    with open(summary_path) as f:
        summary = json.load(f)
    stopped = loop.stop_reason not in ("", COMPLETED)
    further = "train again in a new --workdir" if stopped else "raise train.steps to train further"
    if jax.process_index() == 0:
        print(f"{workdir} has finished ({loop.stop_reason or COMPLETED} at step {loop.step}), nothing to train; "
              f"its results are in {summary_path} and report.md ({further})")
    return summary


def save_tokenizer(corpus: Corpus, workdir: str) -> None:
    """Copy the tokenizer next to the checkpoints; a workdir's existing tokenizer must be the same."""
    if hasattr(corpus, "cache_dir"):
        return copy_tokenizer(os.path.join(corpus.cache_dir, "tokenizer"), workdir)
    with tempfile.TemporaryDirectory() as tmp:  # conversations: the tokenizer lives in memory only
        corpus.tokenizer.save(tmp)
        copy_tokenizer(tmp, workdir)


def copy_tokenizer(source: str, workdir: str) -> None:
    target = os.path.join(workdir, "tokenizer")
    if not os.path.exists(target):
        shutil.copytree(source, target)
        return
    names = sorted(os.listdir(source))
    same = names == sorted(os.listdir(target)) and all(
        filecmp.cmp(os.path.join(source, n), os.path.join(target, n), shallow=False) for n in names)
    if not same:
        raise UserError(f"{target} differs from the tokenizer this config builds (has the corpus changed?); "
                        "use a new --workdir")


def write_samples(config, corpus: Corpus, graphdef, params, rest, workdir: str,
                  name: str = "samples") -> list[tuple[str, str]]:
    sc, tok = config.sample, corpus.tokenizer
    samples = []
    for i, prompt in enumerate(sc.prompts):
        ids = tok.encode(prompt)
        if len(ids) == 0:
            continue
        out = generate_uncached(graphdef, params, rest, ids, sc.max_new_tokens, config.model.block_size,
                                sc.temperature, sc.top_k, config.seed + i)
        samples.append((prompt, tok.decode(np.asarray(out))))
    if jax.process_index() != 0:
        return samples
    with open(os.path.join(workdir, f"{name}.txt"), "w", encoding="utf-8") as f:
        for prompt, text in samples:
            f.write(f"=== prompt: {prompt!r}\n{prompt}{text}\n\n")
    return samples
