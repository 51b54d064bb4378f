"""A run's validation bits per char against wall-clock seconds and FLOPs, beside n-gram lines.

The n-grams are character-level Kneser-Ney models on the run's own text and split, so any
tokenizer the run used compares on bits per char. Writes `vs_ngram.png` and `vs_ngram.json`
(n-gram scores and the seconds at which the run's curve first drops below each).
`python -m gptjax.eval.curves --workdir runs/x` is the command.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from gptjax.data.prepare import prepare  # noqa: E402
from gptjax.train import flops_per_token  # noqa: E402
from gptjax.train.ngram_figures import char_ngram_bpc  # noqa: E402
from gptjax.workdir import load_config, read_metrics, write_json  # noqa: E402


def crossings(records: list[dict], ngrams: dict[int, float]) -> dict[int, float | None]:
    """Seconds of training at which validation bits per char first fell below each n-gram."""
    evals = [(r["elapsed"], r["val_bpc"]) for r in records if "val_bpc" in r]
    return {order: next((t for t, bpc in evals if bpc < line), None) for order, line in ngrams.items()}


def plot(records: list[dict], ngrams: dict[int, float], flops_per_tok: float, path: str) -> None:
    evals = [r for r in records if "val_bpc" in r]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    xs = ([r["elapsed"] for r in evals], [r["tokens_seen"] * flops_per_tok for r in evals])
    for ax, x, label in zip(axes, xs, ("wall-clock seconds", "training FLOPs")):
        ax.plot(x, [r["val_bpc"] for r in evals], marker=".", label="GPT (validation)")
        for order, line in sorted(ngrams.items()):
            ax.axhline(line, linestyle="--", linewidth=1, color=f"C{order % 10}", label=f"{order}-gram")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log")
    axes[1].xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap
    axes[0].set_ylabel("validation bits per char")
    axes[0].legend()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def compare_with_ngrams(workdir: str, orders: list[int]) -> dict:
    config = load_config(workdir)
    records = read_metrics(workdir)
    ngrams = char_ngram_bpc(config.data, config.seed, orders)
    vocab = prepare(config.data, config.seed).tokenizer.vocab_size
    plot(records, ngrams, flops_per_token(config.model, vocab), os.path.join(workdir, "vs_ngram.png"))
    result = {"ngram_val_bpc": ngrams, "crossing_seconds": crossings(records, ngrams),
              "final_val_bpc": next((r["val_bpc"] for r in reversed(records) if "val_bpc" in r), None)}
    write_json(os.path.join(workdir, "vs_ngram.json"), result)
    return result
