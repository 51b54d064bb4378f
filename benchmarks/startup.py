"""Start-up and time to first token of the commands, the second time they run.

    python -m benchmarks.startup [--workdir /tmp/startup_model] [--lengths 64,576,2000]

Trains (a few steps; speed does not depend on the weights) a 4-layer, 128-wide model with a
1,024-token context unless --workdir already holds one, then runs `python -m gptjax.generate`
for each length twice as a fresh process and prints its wall time and the time to its first
streamed piece, beside the same generation in this warm process (the floor no start-up can
beat). Then `python -m gptjax.chat`'s first turn, timed from the message to the first piece.
The second runs read their compiled programs from the persistent compilation cache
(`gptjax.cli`); this uses a private cache directory, so the first runs start cold.

Targets on a 2-core CPU, second run: generate of 2,000 tokens <= 3 s in all, first piece <= 2 s;
chat's first turn <= 2 s after the prompt.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = ["--config.model.n_layer=4", "--config.model.n_embd=128", "--config.model.n_head=4",
         "--config.model.block_size=1024", "--config.train.steps=4", "--config.train.steps_per_call=2",
         "--config.train.eval_every=4", "--config.train.checkpoint_every=4", "--config.train.log_every=2",
         "--config.train.batch_size=2"]


def environment(cache: str) -> dict:
    return {**os.environ, "PYTHONPATH": ROOT, "GPTJAX_COMPILE_CACHE": cache}


def train(workdir: str, cache: str) -> None:
    subprocess.run([sys.executable, "-m", "gptjax.main", "--config", "configs/base.py:smoke", "--workdir",
                    workdir, *MODEL], cwd=ROOT, env=environment(cache), check=True, stdout=subprocess.DEVNULL)


def timed_generate(workdir: str, cache: str, new: int) -> tuple[float, float]:
    """(wall seconds, seconds to the first byte on stdout) of one `gptjax.generate` process."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "gptjax.generate", "--workdir", workdir, "--prompt", "First",
                                "--strategy", "greedy", "--max_new_tokens", str(new)], cwd=ROOT,
                               env=environment(cache), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.read(1)
    first = time.perf_counter() - started
    process.communicate()
    if process.returncode:
        raise SystemExit(f"generate failed with exit status {process.returncode}")
    return time.perf_counter() - started, first


def warm_generate(workdir: str, new: int) -> float:
    from gptjax.generate.generator import Generator
    from gptjax.generate.settings import GenerationSettings
    from gptjax.workdir import load_model

    model, tokenizer, _ = load_model(workdir)
    generator = Generator(model, tokenizer)
    settings = GenerationSettings(strategy="greedy", max_new_tokens=new)
    ids = generator.encode("First")
    generator.generate([ids], settings)
    started = time.perf_counter()
    generator.generate([ids], settings)
    return time.perf_counter() - started


def chat_first_turn(workdir: str, cache: str) -> tuple[float, float]:
    """(seconds to the first prompt, seconds from the first message to its first piece)."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "gptjax.chat", "--workdir", workdir, "--verbose",
                                "--max_new_tokens", "64"], cwd=ROOT, env=environment(cache),
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = ""
    while not seen.endswith("you> "):
        char = process.stdout.read(1)
        if not char:
            raise SystemExit("chat ended before its prompt: " + process.stderr.read()[-500:])
        seen += char
    ready = time.perf_counter() - started
    out, _ = process.communicate("Hello there\n/quit\n")
    found = re.search(r"first token after ([0-9.]+) s", out)
    return ready, float(found.group(1)) if found else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default=os.path.join(tempfile.gettempdir(), "gptjax_startup_model"))
    parser.add_argument("--lengths", default="64,576,2000")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gptjax_startup_cache_") as cache:
        if not os.path.exists(os.path.join(args.workdir, "config.json")):
            print(f"training the 4x128 model with a 1,024 context into {args.workdir} ...", flush=True)
            train(args.workdir, cache)
        print(f"{'new tokens':>10} {'run':>4} {'wall s':>7} {'first piece s':>14} {'warm in-process s':>18}")
        for new in [int(n) for n in args.lengths.split(",")]:
            warm = warm_generate(args.workdir, new)
            for run in (1, 2):
                wall, first = timed_generate(args.workdir, cache, new)
                print(f"{new:>10} {run:>4} {wall:>7.2f} {first:>14.2f} {warm:>18.3f}", flush=True)
        print("target, second run of 2,000 tokens: wall <= 3 s, first piece <= 2 s")
        for run in (1, 2):
            ready, first = chat_first_turn(args.workdir, cache)
            print(f"chat run {run}: prompt after {ready:.2f} s, first turn's first piece {first:.2f} s after the "
                  "message (target <= 2 s)", flush=True)


if __name__ == "__main__":
    main()
