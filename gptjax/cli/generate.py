"""Generate text from a trained model: `python -m gptjax.generate --workdir runs/x --prompt "..."`.

The decoding is `gptjax.generate.generator.Generator`. One prompt and one greedy or sampled
completion stream to the terminal; anything more is printed per prompt and sample, or
written as JSON lines with --output. Bad settings, a
workdir without a model, or a prompt the model cannot read end as one `error:` line, exit 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from gptjax.cli import guarded
from gptjax.errors import UserError
from gptjax.generate.generator import Completion, Generator
from gptjax.generate.settings import GenerationSettings


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gptjax.generate", description=__doc__.splitlines()[0])
    p.add_argument("--workdir", required=True, help="directory of a trained model")
    p.add_argument("--checkpoint", default="best", help="best (falls back to last) or last")
    p.add_argument("--adapter", default="", help="LoRA adapter: a name in WORKDIR/adapters/ or its directory")
    p.add_argument("--quantize", default="none", help="none or int8 (weight-only, per-channel scales)")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompts_file", help="one prompt per line, or .jsonl records with a 'prompt' field")
    p.add_argument("--output", help="write JSON lines here instead of printing")
    p.add_argument("--strategy", default="sample", help="greedy, sample or beam")
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--length_penalty", type=float, default=1.0, help="beam score = logprob / length**this")
    p.add_argument("--early_stopping", action=argparse.BooleanOptionalAction, default=True,
                   help="beam: stop once `beams` hypotheses are finished")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--top_p", type=float, default=1.0)
    p.add_argument("--min_p", type=float, default=0.0)
    p.add_argument("--repetition_penalty", type=float, default=1.0)
    p.add_argument("--frequency_penalty", type=float, default=0.0)
    p.add_argument("--num_samples", type=int, default=1)
    p.add_argument("--max_new_tokens", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=[],
                   help="stop string, or special token such as '<|end|>' (repeatable; \\n means newline)")
    p.add_argument("--overflow", default="sliding", help="sliding (drop the oldest tokens) or error")
    p.add_argument("--sliding_keep", type=int, default=0, help="tokens kept when the window slides")
    return p.parse_args(argv)


def read_prompts(args: argparse.Namespace) -> list[str]:
    prompts = list(args.prompt)
    if args.prompts_file:
        if not os.path.isfile(args.prompts_file):
            raise UserError(f"--prompts_file {args.prompts_file} does not exist; give a text or .jsonl file")
        with open(args.prompts_file, encoding="utf-8") as f:
            lines = [line.rstrip("\n") for line in f if line.strip()]
        if args.prompts_file.endswith(".jsonl"):
            for n, line in enumerate(lines, 1):
                try:
                    prompts.append(str(json.loads(line)["prompt"]))
                except (ValueError, KeyError, TypeError):
                    raise UserError(f"{args.prompts_file} line {n} is not a JSON object with a 'prompt'; "
                                    'write records like {"prompt": "..."}') from None
        else:
            prompts += lines
    if not prompts:
        raise UserError("no prompt; give --prompt TEXT or --prompts_file FILE")
    return prompts


def settings_from(args: argparse.Namespace, special_ids: dict[str, int]) -> GenerationSettings:
    stops = [s.replace("\\n", "\n").replace("\\t", "\t") for s in args.stop]
    stop_tokens = [special_ids[s] for s in stops if s in special_ids]
    if "<|endoftext|>" in special_ids:
        stop_tokens.append(special_ids["<|endoftext|>"])
    return GenerationSettings(
        strategy=args.strategy, max_new_tokens=args.max_new_tokens, num_samples=args.num_samples,
        temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
        repetition_penalty=args.repetition_penalty, frequency_penalty=args.frequency_penalty,
        beams=args.beams, length_penalty=args.length_penalty, early_stopping=args.early_stopping,
        stop_tokens=tuple(sorted(set(stop_tokens))), stop_strings=tuple(s for s in stops if s not in special_ids),
        seed=args.seed, overflow=args.overflow, sliding_keep=args.sliding_keep)


def record(prompt: str, sample: int, c: Completion) -> dict:
    out = {"prompt": prompt, "sample": sample, "text": c.text, "tokens": len(c.tokens),
           "finish_reason": c.finish_reason}
    if c.score is not None:
        out["score"] = c.score
    return out


def run(args: argparse.Namespace) -> None:
    from gptjax.workdir import load_model_with_adapter

    prompts = read_prompts(args)
    settings_from(args, {}).validate()  # refuse bad flags before loading anything
    model, tokenizer, _ = load_model_with_adapter(args.workdir, args.adapter, args.checkpoint, quantize=args.quantize)
    generator = Generator(model, tokenizer)
    settings = settings_from(args, tokenizer.special_ids)
    ids = [generator.encode(p, where=f"prompt {n}" if len(prompts) > 1 else "the prompt")
           for n, p in enumerate(prompts, 1)]
    if not args.output and len(prompts) == 1 and settings.strategy != "beam" and settings.num_samples == 1:
        sys.stdout.write(prompts[0])
        for piece in generator.stream(ids[0], settings):
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        return
    results = generator.generate(ids, settings)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                for prompt, completions in zip(prompts, results):
                    for i, c in enumerate(completions):
                        f.write(json.dumps(record(prompt, i, c), ensure_ascii=False) + "\n")
        except OSError as e:
            raise UserError(f"cannot write --output {args.output}: {e.strerror}") from None
        return
    for n, (prompt, completions) in enumerate(zip(prompts, results), 1):
        for i, c in enumerate(completions, 1):
            score = f", score {c.score:.3f}" if c.score is not None else ""
            print(f"=== prompt {n}, sample {i} ({c.finish_reason}{score})\n{prompt}{c.text}\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    guarded(lambda: run(args))


if __name__ == "__main__":
    main()
