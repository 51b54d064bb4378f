"""The main job, top to bottom: data -> model -> train -> evaluate -> samples -> report.

`run(config, workdir)` is everything `python -m gptjax.main` does. Re-running it on the
same workdir resumes from the last checkpoint and continues the same trajectory.
"""

from __future__ import annotations

import filecmp
import math
import os
import shutil
import time

import jax
import numpy as np

from gptjax.data.prepare import Corpus, prepare
from gptjax.errors import UserError
from gptjax.generate.reference import generate_uncached
from gptjax.train import config_checks, distributed, environment, report
from gptjax.train import mesh as mesh_lib
from gptjax.train import state as state_lib
from gptjax.train.checkpoints import Checkpoints
from gptjax.train.loop import MetricsLog, Trainer
from gptjax.train.optimizer import build_optimizer
from gptjax.workdir import write_json


def run(config, workdir: str) -> dict:
    """Train and evaluate the model `config` describes; returns the summary it writes."""
    started = time.time()
    config_checks.check_config(config)
    distributed.initialize(config)  # before anything starts a JAX backend
    main_process = jax.process_index() == 0
    os.makedirs(workdir, exist_ok=True)
    config_checks.check_workdir(config, workdir)

    corpus = prepare(config.data, config.seed)
    config_checks.check_corpus(config, corpus)
    if main_process:
        save_tokenizer(corpus, workdir)
        write_json(os.path.join(workdir, "config.json"), config.to_dict())
        write_json(os.path.join(workdir, "environment.json"), environment.environment(config.seed))

    mesh = mesh_lib.build_mesh(config.mesh)
    vocab = corpus.tokenizer.vocab_size
    graphdef, abstract_params, abstract_rest = state_lib.abstract_model(config.model, vocab, config.seed)
    config_checks.check_batch(config, mesh)
    tx = build_optimizer(config.train, abstract_params)
    shardings = state_lib.state_shardings(graphdef, abstract_params, abstract_rest, tx, mesh)
    checkpoints = Checkpoints(workdir, config.train.keep_checkpoints)
    meta = {"step": 0, "tokens_seen": 0, "wall_seconds": 0.0, "best_val_loss": math.inf, "best_step": 0,
            "evals_since_best": 0}
    if checkpoints.latest_step() is not None:
        target = state_lib.restore_target(config.model, vocab, config.seed, tx, shardings)
        state, meta = checkpoints.restore(target)
        print(f"resuming from step {meta['step']} in {workdir}")
    else:
        state = state_lib.init_state(config.model, vocab, config.seed, tx, shardings)
    n_params = state_lib.count_params(abstract_params)
    print(f"model: {config.model.kind}, {n_params:,} parameters; data: {corpus.tokens['train'].size:,} train tokens; "
          f"mesh {dict(mesh.shape)}")

    trainer = Trainer(config, corpus, mesh, graphdef, tx, shardings)
    print(trainer.memory_report(state))
    if not meta["step"]:
        meta["wall_seconds"] = time.time() - started  # a run's clock includes preparing its data
    log = MetricsLog(os.path.join(workdir, "metrics.jsonl"), int(meta["step"]))
    state, meta = trainer.run(state, meta, checkpoints, log)

    if checkpoints.has_best():
        target = state_lib.restore_target(config.model, vocab, config.seed, tx, shardings)
        best, _ = checkpoints.restore(target, which="best")
        params, rest = best.params, best.rest
    else:
        params, rest = state.params, state.rest
    checkpoints.close()
    final = {split: trainer.full_split(params, rest, split) for split in ("val", "test") if corpus.tokens[split].size}
    samples = write_samples(config, corpus, graphdef, params, rest, workdir)  # every process computes

    summary = {"params": n_params, "tokens_seen": int(meta["tokens_seen"]), "steps": int(meta["step"]),
               "wall_seconds": round(time.time() - started, 1), "train_seconds": round(meta["wall_seconds"], 1),
               "best_val_loss": meta["best_val_loss"], "best_step": meta["best_step"],
               "stop_reason": meta.get("stop_reason", "completed")}
    for split, scores in final.items():
        summary.update({f"{split}_loss": scores["loss"], f"{split}_bpc": scores["bits_per_char"],
                        f"{split}_bpb": scores["bits_per_byte"], f"{split}_perplexity": scores["perplexity"]})
    if main_process:
        write_json(os.path.join(workdir, "summary.json"), summary)
        report.write_report(workdir, config, summary, corpus.cleaning, samples)
        scores = "".join(f", {split} {summary[f'{split}_bpc']:.3f} bits/char" for split in final)
        print(f"done: best val loss {summary['best_val_loss']:.4f}{scores}; report in {os.path.join(workdir, 'report.md')}")
    return summary


def save_tokenizer(corpus: Corpus, workdir: str) -> None:
    """Copy the tokenizer next to the checkpoints; a workdir's existing tokenizer must be the same."""
    source, target = os.path.join(corpus.cache_dir, "tokenizer"), os.path.join(workdir, "tokenizer")
    if not os.path.exists(target):
        shutil.copytree(source, target)
        return
    names = sorted(os.listdir(source))
    same = names == sorted(os.listdir(target)) and all(
        filecmp.cmp(os.path.join(source, n), os.path.join(target, n), shallow=False) for n in names)
    if not same:
        raise UserError(f"{target} differs from the tokenizer this config builds (has the corpus changed?); "
                        "use a new --workdir")


def write_samples(config, corpus: Corpus, graphdef, params, rest, workdir: str) -> list[tuple[str, str]]:
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
    with open(os.path.join(workdir, "samples.txt"), "w", encoding="utf-8") as f:
        for prompt, text in samples:
            f.write(f"=== prompt: {prompt!r}\n{prompt}{text}\n\n")
    return samples
