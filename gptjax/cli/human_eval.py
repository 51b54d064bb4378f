"""Blind pairwise human evaluation of generated text (the kit is `gptjax.eval.human_eval`).

    python -m gptjax.human_eval make --inputs base.jsonl tuned=runs/tuned/samples.jsonl --out eval1
    python -m gptjax.human_eval score eval1

`make` writes sheet.html (for raters), ratings.csv (they fill in the winner) and key.json
(which system is A and B; keep it from the raters). `score` prints per system its win rate
and Bradley-Terry strength, with 95% bootstrap intervals from resampling the rated items.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from gptjax.cli import guarded

EXAMPLE = """examples:
  python -m gptjax.human_eval make --inputs base=base.jsonl tuned=tuned.jsonl --out eval1
  python -m gptjax.human_eval score eval1"""
from gptjax.errors import UserError
from gptjax.eval.human_eval import BOOTSTRAP_SAMPLES, make, score


def table(result: dict) -> str:
    lines = [f"{result['rated']} of {result['items']} items rated; 95% intervals from "
             f"{result['samples']} bootstrap resamples of the rated items (seed {result['seed']})",
             f"{'system':<20} {'compared':>8}  {'win rate [95% CI]':<22} {'Bradley-Terry strength [95% CI]'}"]
    ranked = sorted(result["systems"].items(), key=lambda kv: -kv[1]["strength"])
    for name, s in ranked:
        rate = f"{s['win_rate']:.3f} [{s['win_rate_ci'][0]:.3f}, {s['win_rate_ci'][1]:.3f}]"
        strength = f"{s['strength']:.3f} [{s['strength_ci'][0]:.3f}, {s['strength_ci'][1]:.3f}]"
        lines.append(f"{name:<20} {s['comparisons']:>8}  {rate:<22} {strength}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m gptjax.human_eval", description=__doc__.split("\n")[0],
                                     epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    make_cmd = commands.add_parser("make", help="write a blind rating kit", epilog=EXAMPLE.splitlines()[1].strip())
    make_cmd.add_argument("--inputs", nargs="+", required=True, metavar="[NAME=]PATH")
    make_cmd.add_argument("--out", required=True)
    make_cmd.add_argument("--seed", type=int, default=0)
    score_cmd = commands.add_parser("score", help="win rates and Bradley-Terry strengths of a rated kit")
    score_cmd.add_argument("directory")
    score_cmd.add_argument("--seed", type=int, default=0)
    score_cmd.add_argument("--samples", type=int, default=BOOTSTRAP_SAMPLES)
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> None:
    if args.command == "make":
        items, prompts = make(args.inputs, args.out, args.seed)
        print(f"{items} items ({prompts} prompts x {items // prompts} pairs of systems) in {args.out}: "
              "give raters sheet.html and ratings.csv, keep key.json")
        return
    if args.samples < 1:
        raise UserError(f"--samples={args.samples} must be at least 1")
    print(table(score(args.directory, args.seed, args.samples)))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    guarded(lambda: run(args))


if __name__ == "__main__":
    main()
