"""report.md and the loss-curve plot: what a person reads after a run."""

from __future__ import annotations

import json
import os

from gptjax.workdir import read_metrics


def plot_losses(workdir: str, records: list[dict]) -> str | None:
    train = [(r["step"], r["train_loss"]) for r in records if "train_loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if not train and not val:
        return None
    import matplotlib  # here, not at the top: importing the training package (as generate does) stays fast

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for points, label in ((train, "train"), (val, "validation")):
        if points:
            ax.plot(*zip(*points), label=label, marker="." if label == "validation" else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    path = os.path.join(workdir, "loss.png")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def environment_init(workdir: str) -> dict:
    """The `init_from` record of environment.json: path and checksum of the starting weights."""
    with open(os.path.join(workdir, "environment.json")) as f:
        return json.load(f).get("init_from", {})


def sample_lines(samples) -> list[str]:
    return [line for prompt, text in samples for line in (f"Prompt `{prompt!r}`:", "", "```", prompt + text, "```", "")]


def fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def comparisons(summary: dict, ngrams: dict[int, float], base: dict | None) -> list[str]:
    """The model's validation bits per char beside the n-grams' (and the base model's, when the
    run started from one) on the same split."""
    if "val_bpc" not in summary or not (ngrams or base):
        return []
    rows = [f"| this model | {summary['val_bpc']:.4f} |"]
    if base is not None:
        rows.append(f"| base model (train.init_from), before fine-tuning | {base['val_bpc']:.4f} |")
    rows += [f"| {order}-gram | {bpc:.4f} |" for order, bpc in sorted(ngrams.items())]
    return ["## Against baselines (validation bits per char)", "",
            "The n-grams are character-level Kneser-Ney models counted on this run's train split.", "",
            "| model | val bits/char |", "|---|---|", *rows, ""]


def write_report(workdir: str, config, summary: dict, cleaning: dict, samples: list[tuple[str, str]],
                 ngrams: dict[int, float] | None = None, base: dict | None = None) -> None:
    records = read_metrics(workdir)
    plot = plot_losses(workdir, records)
    m, d, t = config.model, config.data, config.train
    lines = [
        f"# Run report: {os.path.basename(os.path.abspath(workdir))}", "",
        "## Setup", "",
        f"- data: {d.source}, split {d.split} (val {d.val_fraction}, test {d.test_fraction}), tokenizer {d.tokenizer}",
        f"- model: {m.kind}, {m.n_layer} layers, {m.n_embd} wide, block {m.block_size}, dropout {m.dropout}"
        + (f", {m.n_head} heads, norm {m.norm}, activation {m.activation}, positions {m.pos_encoding}"
           if m.kind == "gpt" else ""),
        f"- training: {t.steps} steps of {t.batch_size} x {m.block_size} tokens"
        + (f" (first rows:steps {t.batch_ramp})" if t.batch_ramp else "") + f", {t.optimizer} lr {t.learning_rate} "
        f"({t.schedule}, warmup {t.warmup_steps}), weight decay {t.weight_decay}, clip {t.grad_clip}",
        f"- cleaning: {json.dumps(cleaning)}",
        *([f"- weights from: {json.dumps(environment_init(workdir))}"] if config.train.get("init_from") else []), "",
        "## Results", "",
        "| figure | value |", "|---|---|",
        *[f"| {k} | {fmt(v)} |" for k, v in summary.items()], "",
    ]
    lines += comparisons(summary, ngrams or {}, base)
    if plot:
        lines += ["![loss curve](loss.png)", ""]
    lines += ["## Samples", "", *sample_lines(samples)]
    if base is not None and base["samples"]:
        lines += ["## Samples of the base model (before fine-tuning)", "", *sample_lines(base["samples"])]
    with open(os.path.join(workdir, "report.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
