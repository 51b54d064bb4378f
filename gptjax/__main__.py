"""`python -m gptjax`: the commands, one line each; `python -m gptjax.COMMAND --help` says more.

The table is written out rather than read from the commands' docstrings so that listing them
imports nothing heavy (JAX alone takes seconds to import).
"""

from __future__ import annotations

import sys

COMMANDS = (
    ("gptjax.prepare", "stream a large corpus once into token shards"),
    ("gptjax.main", "train a model from a config into a workdir (rerun to resume)"),
    ("gptjax.evaluate", "score a trained model or an n-gram baseline on a split"),
    ("gptjax.eval.curves", "a run's validation curve beside n-gram baselines"),
    ("gptjax.generate", "generate text from a trained model (stream, batch, beam, JSON lines)"),
    ("gptjax.chat", "chat with a trained model in the terminal"),
    ("gptjax.serve", "serve a model over an OpenAI-compatible HTTP API and a web page"),
    ("gptjax.export", "write a trained model as a Hugging Face GPT-2 directory"),
    ("gptjax.human_eval", "blind pairwise human evaluation kits and their scores"),
    ("gptjax.launch", "run one command as several cooperating JAX processes"),
)


def listing() -> str:
    width = max(len(name) for name, _ in COMMANDS)
    lines = ["usage: python -m COMMAND [flags]   (each takes --help, with an example)", "", "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, what in COMMANDS]
    return "\n".join(lines)


def main() -> None:
    print(listing())
    sys.exit(0 if len(sys.argv) == 1 or sys.argv[1] in ("-h", "--help") else 2)


if __name__ == "__main__":
    main()
