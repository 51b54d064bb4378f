"""Sweeps: the runs x seeds of one study, trained one after another, then one table and one plot.

A sweep is a config file whose get_config() returns

    sweep=True, base=<a full training config>, seeds=[0, 1, 2],
    runs=[dict(name="5-gram", kind="ngram", order=5),
          dict(name="lstm", overrides={"model.kind": "lstm", "model.n_embd": 256}), ...]

and `python -m gptjax.main --config experiments/<name>.py --workdir runs/<name>` trains each
(run, seed) in `runs/<name>/<run>-s<seed>/` with `gptjax.train.run`. A run may start from
another run of the same sweep and seed: `overrides={"train.init_from": "run:pretrain"}` (that
run must come earlier in `runs`). A run whose
summary.json exists is skipped, so an interrupted sweep resumes where it stopped (the run it
stopped in resumes from its checkpoint). N-gram runs are trained on the train split and
scored on the same tokens as the models (`eval.max_tokens`).

Written at the end: results.md (mean ± std over seeds, n-gram rows first), results.json
(every seed's numbers) and val_curves.png (validation bits per char against tokens seen).
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import statistics
import time
from typing import NamedTuple

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from ml_collections import ConfigDict  # noqa: E402

from gptjax import train  # noqa: E402
from gptjax.baselines.ngram import ngram_baseline  # noqa: E402
from gptjax.data.prepare import prepare  # noqa: E402
from gptjax.data.tokenizers import tokenizer_id  # noqa: E402
from gptjax.errors import UserError  # noqa: E402
from gptjax.eval.heldout import compare  # noqa: E402
from gptjax.workdir import read_metrics, write_json  # noqa: E402

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")


class Run(NamedTuple):
    name: str
    ngram_order: int     # 0 for a trained model
    overrides: dict


def parse_runs(sweep) -> list[Run]:
    """The sweep's runs, checked: unique names usable as directories, n-gram orders, override dicts."""
    for key in ("base", "runs", "seeds"):
        if sweep.get(key) is None:
            raise UserError(f"the sweep config has no {key!r}; a sweep needs base, runs and seeds")
    if not sweep.seeds or not all(isinstance(s, int) for s in sweep.seeds):
        raise UserError(f"sweep seeds={list(sweep.seeds)!r} must be a non-empty list of integers")
    runs = []
    for i, spec in enumerate(sweep.runs):
        spec = dict(spec)
        name = spec.get("name", "")
        if not isinstance(name, str) or not NAME.match(name):
            raise UserError(f"sweep run {i} has name {name!r}; use letters, digits and _.+- (it names a directory)")
        if spec.get("kind") == "ngram":
            order = spec.get("order")
            if not isinstance(order, int) or order < 1:
                raise UserError(f"sweep run {name!r} is an n-gram without an integer order >= 1; add order=5")
            runs.append(Run(name, order, run_overrides(name, spec)))
        elif spec.get("kind") is None:
            runs.append(Run(name, 0, run_overrides(name, spec)))
        else:
            raise UserError(f"sweep run {name!r} has kind={spec['kind']!r}; use kind='ngram' or leave kind out "
                            "(a trained model, chosen by overrides such as model.kind)")
    names = [r.name for r in runs]
    if not runs or len(set(names)) != len(names):
        raise UserError(f"sweep runs {names} must be non-empty with unique names")
    return runs


def run_overrides(name: str, spec: dict) -> dict:
    """A run's dotted-key overrides: the model's switches, or an n-gram's data (e.g. data.train_chars)."""
    overrides = spec.get("overrides", {})
    if not isinstance(overrides, dict):
        raise UserError(f"sweep run {name!r}: overrides must be a dict of dotted config keys to values")
    return dict(overrides)


def run_config(base, seed: int, overrides: dict):
    """The base config with the run's seed and overrides (dotted keys that must already exist)."""
    config = copy.deepcopy(base)
    config.seed = seed
    for dotted, value in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, ConfigDict) else None
        if not isinstance(node, ConfigDict) or leaf not in node:
            raise UserError(f"sweep override {dotted!r} is not a config key; check its spelling in "
                            "configs/default.py")
        try:
            node[leaf] = value
        except TypeError as e:
            raise UserError(f"sweep override {dotted}={value!r} has the wrong type: {e}") from e
    return config


SIBLING = "run:"


def sibling_init(run: Run, runs: list[Run], seed: int, workdir: str) -> dict:
    """The run's overrides with `train.init_from=run:NAME` pointed at NAME's workdir for this seed."""
    target = run.overrides.get("train.init_from", "")
    if not isinstance(target, str) or not target.startswith(SIBLING):
        return run.overrides
    name = target[len(SIBLING):]
    earlier = [r.name for r in runs[:runs.index(run)] if not r.ngram_order]
    if name not in earlier:
        raise UserError(f"sweep run {run.name!r} starts from {target!r}, which is not a model run listed before it "
                        f"(earlier: {earlier}); list that run first")
    return {**run.overrides, "train.init_from": os.path.join(workdir, f"{name}-s{seed}")}


class NgramCache:
    """n-gram results by (corpus, order, eval.max_tokens): seeds that share a corpus share the numbers."""

    def __init__(self):
        self.results: dict[tuple, dict] = {}

    def summary(self, config, order: int) -> dict:
        corpus = prepare(config.data, config.seed)
        key = (corpus.cache_dir, order, config.eval.max_tokens)
        if key not in self.results:
            started = time.time()
            scores = {split: ngram_baseline(corpus, order, split, config.eval.max_tokens)
                      for split in ("val", "test") if corpus.tokens[split].size > 1}
            summary = {"params": None, "tokens_seen": int(corpus.tokens["train"].size),
                       "wall_seconds": round(time.time() - started, 1)}
            for split, s in scores.items():
                summary.update({f"{split}_loss": s["loss"], f"{split}_bpc": s["bits_per_char"],
                                f"{split}_bpb": s["bits_per_byte"], f"{split}_perplexity": s["perplexity"]})
            summary["tokenizer"] = tokenizer_id(os.path.join(corpus.cache_dir, "tokenizer"))
            self.results[key] = summary
        return self.results[key]


def run_one(run: Run, config, workdir: str, ngrams: NgramCache) -> dict:
    """The summary of one (run, seed): read back if finished, else trained (or counted) now."""
    path = os.path.join(workdir, "summary.json")
    if os.path.exists(path):
        print(f"sweep: {os.path.basename(workdir)} is finished; skipping it")
        with open(path) as f:
            return json.load(f)
    print(f"sweep: {os.path.basename(workdir)}")
    if run.ngram_order:
        os.makedirs(workdir, exist_ok=True)
        summary = ngrams.summary(config, run.ngram_order)
        write_json(path, summary)
        return summary
    return train.run(config, workdir, run.overrides)


def record(run: Run, config, seed: int, summary: dict, workdir: str) -> dict:
    """The figures of one (run, seed) that the table, the plot and results.json use."""
    tokenizer = summary.get("tokenizer") or tokenizer_id(os.path.join(workdir, "tokenizer"))
    out = {"run": run.name, "seed": seed, "ngram": bool(run.ngram_order),
           "kind": f"{run.ngram_order}-gram" if run.ngram_order else config.model.kind,
           "workdir": workdir, "tokenizer": tokenizer, "params": summary.get("params"),
           "tokens": summary["tokens_seen"], "seconds": summary["wall_seconds"]}
    for split in ("val", "test"):
        if f"{split}_bpc" in summary:
            out[f"{split}_bpc"] = summary[f"{split}_bpc"]
            out[f"{split}_bits_per_token"] = summary[f"{split}_loss"] / math.log(2)
    return out


def run_sweep(sweep, workdir: str) -> list[dict]:
    """Train every (run, seed) not yet finished, then write the table, results.json and the plot."""
    runs = parse_runs(sweep)
    os.makedirs(workdir, exist_ok=True)
    write_json(os.path.join(workdir, "sweep.json"), sweep.to_dict())
    ngrams, records = NgramCache(), []
    ordered = [r for r in runs if r.ngram_order] + [r for r in runs if not r.ngram_order]
    for run in ordered:
        for seed in sweep.seeds:
            run_dir = os.path.join(workdir, f"{run.name}-s{seed}")
            config = run_config(sweep.base, seed, sibling_init(run, runs, seed, workdir))
            records.append(record(run, config, seed, run_one(run, config, run_dir, ngrams), run_dir))
    write_json(os.path.join(workdir, "results.json"), {"records": records})
    table = results_table(records)
    with open(os.path.join(workdir, "results.md"), "w", encoding="utf-8") as f:
        f.write(f"# Sweep: {os.path.basename(os.path.abspath(workdir))}\n\n{table}\n\n![validation curves]"
                "(val_curves.png)\n")
    plot_curves(records, os.path.join(workdir, "val_curves.png"))
    print(table)
    print(f"sweep done: {os.path.join(workdir, 'results.md')}")
    return records


def mean_std(values: list, digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.fmean(values)
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def count(values: list) -> str:
    values = [v for v in values if v is not None]
    return f"{round(statistics.fmean(values)):,}" if values else "-"


def results_table(records: list[dict]) -> str:
    """Markdown: one row per run (mean ± sample std over seeds), in the order records came."""
    per_token = True
    try:
        compare([r for r in records if "test_bits_per_token" in r], "test_bits_per_token")
    except UserError:
        per_token = False
    header = ["run", "model", "seeds", "val bits/char", "test bits/char"]
    header += ["test bits/token"] if per_token else []
    header += ["params", "train tokens", "time (s)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name in dict.fromkeys(r["run"] for r in records):
        rows = [r for r in records if r["run"] == name]
        cells = [name, rows[0]["kind"], str(len(rows)), mean_std([r.get("val_bpc") for r in rows], 3),
                 mean_std([r.get("test_bpc") for r in rows], 3)]
        cells += [mean_std([r.get("test_bits_per_token") for r in rows], 3)] if per_token else []
        cells += [count([r["params"] for r in rows]), count([r["tokens"] for r in rows]),
                  mean_std([r["seconds"] for r in rows], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    notes = ["", "Mean ± sample standard deviation over seeds. n-gram models count every train token; "
             "their time is training plus scoring.", f"Total run time: {sum(r['seconds'] for r in records) / 60:.1f} "
             "minutes."]
    if not per_token:
        notes.append("Bits per token left out: the runs use different tokenizers, so only bits per char compare.")
    return "\n".join(lines + notes)


def plot_curves(records: list[dict], path: str) -> None:
    """Validation bits per char against tokens seen, averaged over seeds; n-gram orders as lines."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["run"] for r in records if not r["ngram"]):
        curves = [{m["tokens_seen"]: m["val_bpc"] for m in read_metrics(r["workdir"]) if "val_bpc" in m}
                  for r in records if r["run"] == name]
        points = sorted(set.intersection(*(set(c) for c in curves)))
        ax.plot(points, [statistics.fmean(c[p] for c in curves) for p in points], marker=".", label=name)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, name in enumerate(dict.fromkeys(r["run"] for r in records if r["ngram"])):
        values = [r["val_bpc"] for r in records if r["run"] == name and "val_bpc" in r]
        if values:
            ax.axhline(statistics.fmean(values), linestyle="--", color=colors[-1 - i % len(colors)], label=name)
    ax.set_xlabel("training tokens seen")
    ax.set_ylabel("validation bits per char")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
