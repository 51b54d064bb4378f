"""What a claim's runs show besides their final loss: the mechanism the claim is about.

From each run's metrics.jsonl: the generalisation gap (validation minus training loss at the
end, what dropout, weight decay, augmentation and more data should shrink), where validation
was best (an overfitting run peaks early), loss spikes and the largest gradient norm (what
clipping should tame), and, where `train.log_layer_norms` was on, the blocks' mean gradient
norm at initialisation and at the end (small while the loss is still high: saturated units pass
little gradient), the first block's gradient norm over the last block's at both times (far
below 1: gradients vanish on their way down; far above: they grow), the last block's activation
RMS and the weights' norm.
The claims report tabulates these as means over seeds.
"""

from __future__ import annotations

import math
import statistics

SERIES = ("train_loss", "val_loss", "grad_norm")
LAYER_SERIES = ("layer_grad_norm/", "layer_activation_rms/", "layer_weight_norm/")
SPIKE_FACTOR = 1.5  # a logged training loss above this many times the lowest so far is a spike


def series(metrics: list[dict]) -> dict[str, list[list[float]]]:
    """{metric: [[step, value], ...]} of the metrics the summaries read; per-layer norms at their
    first and last step only (the run's layer_norms.png has their curves)."""
    out: dict[str, list[list[float]]] = {}
    for record in metrics:
        for key, value in record.items():
            if key in SERIES or key.startswith(LAYER_SERIES):
                out.setdefault(key, []).append([record["step"], value])
    return {k: v if k in SERIES else [v[0], v[-1]][:len(v)] for k, v in out.items()}


def block_names(s: dict, prefix: str) -> list[str]:
    """The residual blocks' keys under `prefix`, in depth order (h.0, h.1, ...)."""
    blocks = [k for k in s if k.startswith(prefix + "h.")]
    return sorted(blocks, key=lambda k: int(k.rsplit(".", 1)[1]))


def summary(s: dict) -> dict[str, float]:
    """One run's diagnostics; a figure its metrics lack is left out."""
    out: dict[str, float] = {}
    train, val = s.get("train_loss", []), s.get("val_loss", [])
    if train and val:
        last = max(step for step, _ in train)
        tail = [v for step, v in train if step >= 0.9 * last]
        out["gap"] = val[-1][1] - statistics.fmean(tail)
        out["best_at"] = min(val, key=lambda p: p[1])[0] / max(val[-1][0], 1)
    if train:
        first = 0.1 * max(step for step, _ in train)
        lowest, spikes = math.inf, 0
        for step, v in train:
            spikes += step > first and v > SPIKE_FACTOR * lowest
            lowest = min(lowest, v)
        out["spikes"] = spikes
    if s.get("grad_norm"):
        out["max_grad_norm"] = max(v for _, v in s["grad_norm"])
    grads = block_names(s, "layer_grad_norm/")
    if len(grads) > 1:
        ratio = [a[1] / max(b[1], 1e-30) for a, b in zip(s[grads[0]], s[grads[-1]])]
        out["grad_ratio_init"], out["grad_ratio_end"] = ratio[0], ratio[-1]
    if grads:
        out["block_grad_init"], out["block_grad_end"] = (statistics.fmean(s[k][i][1] for k in grads) for i in (0, -1))
    acts = block_names(s, "layer_activation_rms/")
    if acts:
        out["last_activation_rms"] = s[acts[-1]][-1][1]
    weights = [k for k in s if k.startswith("layer_weight_norm/")]
    if weights:
        out["weight_norm"] = math.sqrt(sum(s[k][-1][1] ** 2 for k in weights))
    return out


COLUMNS = (("gap", "val − train loss, end (nats/token)", "{:+.3g}"),
           ("best_at", "best val at (fraction of training)", "{:.2f}"),
           ("spikes", "loss spikes", "{:.1f}"),
           ("max_grad_norm", "max grad norm", "{:.3g}"),
           ("block_grad_init", "block grad norm (mean), init", "{:.3g}"),
           ("block_grad_end", "block grad norm (mean), end", "{:.3g}"),
           ("grad_ratio_init", "grad norm first/last block, init", "{:.3g}"),
           ("grad_ratio_end", "grad norm first/last block, end", "{:.3g}"),
           ("last_activation_rms", "last block activation RMS, end", "{:.3g}"),
           ("weight_norm", "weight norm, end", "{:.1f}"))


def table(runs: dict[str, list[dict]]) -> list[str]:
    """Markdown rows: per arm (its seeds' series), the mean of each diagnostic every run has."""
    summaries = {name: [summary(s) for s in seeds] for name, seeds in runs.items() if seeds}
    if not summaries:
        return []
    keys = [c for c in COLUMNS if all(c[0] in r for rows in summaries.values() for r in rows)]
    lines = ["| arm | " + " | ".join(title for _, title, _ in keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for name, rows in summaries.items():
        cells = [fmt.format(statistics.fmean(r[key] for r in rows)) for key, _, fmt in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines
