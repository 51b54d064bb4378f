"""The persona study over seeds: per seed a base, its full fine-tune and a LoRA fine-tune, each
measured by experiments/persona_eval.py, then mean ± std over the seeds.

    python -m experiments.persona_seeds --root runs/persona_study            # 3 seeds
    python -m experiments.persona_seeds --root runs/persona_check --seeds 0 --prompts 8 --score 20 --smoke  # a check

Per seed S, the README's commands with `--config.seed=S`: `configs/persona.py:base` (the base),
`configs/persona.py` from it (full fine-tuning), and the same with `train.lora_rank=8` at the
pretraining learning rates (2e-3 AdamW, 0.02 Muon: low-rank adapters take a larger step than
full fine-tuning's 5e-4 / 0.005; the steps are the same). A stage whose output exists is
skipped, so a stopped study resumes. Writes ROOT/results.json and ROOT/results.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

LORA = ["--config.train.lora_rank=8", "--config.train.learning_rate=0.002", "--config.train.muon_learning_rate=0.02"]
MODELS = ("base", "sft", "lora")


def stage(done: str, command: list[str], log: str) -> None:
    """Run a command unless its output `done` exists; its output goes to `log`."""
    if os.path.exists(done):
        return
    print(" ".join(command), flush=True)
    with open(log, "w") as f:
        subprocess.run([sys.executable, "-m", *command], check=True, stdout=f, stderr=subprocess.STDOUT)


def run_seed(root: str, seed: int, args: argparse.Namespace) -> dict:
    base, sft, lora = (os.path.join(root, f"{name}-s{seed}") for name in MODELS)
    seed_flag = f"--config.seed={seed}"
    smoke = (",smoke", ":smoke") if args.smoke else ("", "")
    context = ["--config.model.block_size=128"] if args.smoke else []  # room for a speech and its reply
    stage(os.path.join(base, "summary.json"), ["gptjax.main", "--config", f"configs/persona.py:base{smoke[0]}",
                                               "--workdir", base, seed_flag, *context], base + ".log")
    for workdir, extra in ((sft, []), (lora, LORA)):
        stage(os.path.join(workdir, "summary.json"),
              ["gptjax.main", "--config", f"configs/persona.py{smoke[1]}", "--workdir", workdir, seed_flag,
               f"--config.train.init_from={base}", *context, *extra], workdir + ".log")
    out = os.path.join(root, f"eval-s{seed}.json")
    stage(out, ["experiments.persona_eval", "--base", base, "--sft", sft, "--lora", lora, "--seed", str(seed),
                "--prompts", str(args.prompts), "--score", str(args.score), "--out", out],
          os.path.join(root, f"eval-s{seed}.log"))
    with open(out) as f:
        result = json.load(f)
    for model, workdir in zip(MODELS, (base, sft, lora)):
        with open(os.path.join(workdir, "summary.json")) as f:
            result[model]["train_seconds"] = json.load(f)["train_seconds"]
    return result


def figures(result: dict, model: str) -> dict[str, float]:
    """The study's headline numbers of one model in one seed's persona_eval result."""
    f = result[model]
    row = {"assistant bits/char": f["assistant"]["bits_per_char"],
           "fidelity, right persona": f["fidelity"]["right"]["rate"],
           "fidelity, wrong persona": f["fidelity"]["wrong"]["rate"],
           "chance": f["fidelity"]["right"]["chance"], "train seconds": f["train_seconds"]}
    for decoder in ("greedy", "beam"):
        for key in ("bleu", "chrf", "distinct_1", "distinct_2", "repetition"):
            row[f"{decoder} {key}"] = f[decoder][key]
    return row


def table(results: list[dict]) -> str:
    rows = {m: [figures(r, m) for r in results] for m in MODELS}
    keys = list(rows["base"][0])
    lines = ["| figure | " + " | ".join(MODELS) + " |", "|---|" + "---|" * len(MODELS)]
    for key in keys:
        cells = []
        for m in MODELS:
            values = [r[key] for r in rows[m]]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            cells.append(f"{statistics.fmean(values):.3f}{spread}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="runs/persona_study")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--score", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="the configs' :smoke variants, a quick check")
    args = parser.parse_args()
    os.makedirs(args.root, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    results = [run_seed(args.root, s, args) for s in seeds]
    text = (f"# Persona study: base, full fine-tune (sft) and LoRA, seeds {args.seeds}\n\n"
            f"Mean ± std over {len(seeds)} seeds of experiments/persona_eval.py ({args.prompts} held-out "
            f"prompts; assistant bits per char on {'all' if not args.score else args.score} held-out "
            f"conversations).\n\n{table(results)}\n")
    with open(os.path.join(args.root, "results.md"), "w") as f:
        f.write(text)
    with open(os.path.join(args.root, "results.json"), "w") as f:
        json.dump({"seeds": seeds, "results": results}, f, indent=1)
    print(text)


if __name__ == "__main__":
    main()
