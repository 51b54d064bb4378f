"""Regenerate docs/claims.md and its plots from the claim sweeps' results.

    python -m experiments.claims.report                          # from experiments/claims/results/
    python -m experiments.claims.report --collect runs/claims    # first copy finished sweeps' results in

`--collect DIR` takes every `DIR/<claim>/results.json` that a finished sweep wrote (with the
validation curves of its runs) into experiments/claims/results/<claim>/; see
gptjax/eval/claims_report.py for what the doc holds and how verdicts are reached.
"""

import argparse
import os

from gptjax.cli import guarded
from gptjax.eval import claims_report

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--collect", default="", help="a directory of sweep workdirs, runs/claims/<claim>/")
    parser.add_argument("--results", default=os.path.join(HERE, "results"))
    parser.add_argument("--doc", default=os.path.join(ROOT, "docs", "claims.md"))
    parser.add_argument("--readme", default=os.path.join(ROOT, "README.md"), help="its verdict table is rewritten")
    args = parser.parse_args()
    if args.collect:
        for claim in claims_report.claims_in(HERE):
            sweep = os.path.join(args.collect, claim.name)
            if os.path.exists(os.path.join(sweep, "results.json")):
                print(f"collected {claims_report.collect(sweep, os.path.join(args.results, claim.name))}")
    print(f"wrote {claims_report.write_report(HERE, args.results, args.doc, args.readme)} and {args.readme}'s table")


if __name__ == "__main__":
    guarded(main)
