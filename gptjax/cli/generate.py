"""Generate text from a trained model: `python -m gptjax.generate --workdir runs/x --prompt "..."`.

The decoding is `gptjax.generate.generator.Generator`. One prompt and one greedy or sampled
completion stream to the terminal; anything more is printed per prompt and sample, or
written as JSON lines with --output (written whole or not at all; never over an input).
Bad settings, a workdir without a model, or a prompt the model cannot read end as one
`error:` line, exit 2. The time to the first streamed piece goes to stderr with --verbose.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from gptjax.cli import guarded
from gptjax.errors import UserError
from gptjax.generate.generator import Completion, Generator
from gptjax.generate.settings import MAX_NEW_TOKENS, GenerationSettings

EXAMPLE = """examples:
  python -m gptjax.generate --workdir runs/x --prompt "ROMEO:" --max_new_tokens 200
  python -m gptjax.generate --workdir runs/x --prompts_file prompts.txt --strategy beam --output out.jsonl"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gptjax.generate", description=__doc__.splitlines()[0],
                                epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="directory of a trained model")
    p.add_argument("--checkpoint", default="best", help="best (falls back to last) or last")
    p.add_argument("--adapter", default="", help="LoRA adapter: a name in WORKDIR/adapters/ or its directory")
    p.add_argument("--quantize", default="none", help="none or int8 (weight-only, per-channel scales)")
    p.add_argument("--verbose", action="store_true", help="print the time to the first token to stderr")
    p.add_argument("--no_compile_cache", action="store_true", help="do not keep compiled programs across runs")
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
    p.add_argument("--max_new_tokens", type=int, default=200, help=f"at most {MAX_NEW_TOKENS:,}")
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


def check_output(args: argparse.Namespace) -> None:
    """Refuse an --output that would overwrite an input of this run: the prompts or the model."""
    if not args.output:
        return
    target = os.path.realpath(args.output)
    if args.prompts_file and os.path.realpath(args.prompts_file) == target:
        raise UserError(f"--output {args.output} is also --prompts_file; writing it would destroy the prompts: "
                        "give another output path")
    model_files = [os.path.realpath(os.path.join(args.workdir, name)) for name in ("config.json", "tokenizer", "checkpoints")]
    if any(target == m or target.startswith(m + os.sep) for m in model_files):
        raise UserError(f"--output {args.output} is part of the model in {args.workdir}; give another output path")
    if os.path.isdir(args.output):
        raise UserError(f"--output {args.output} is a directory; give a file path such as out.jsonl")


def write_records(path: str, lines: list[str]) -> None:
    """Write the JSON lines through a temporary file beside `path`, renamed over it when complete."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = tempfile.mkstemp(prefix=".generate-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.writelines(lines)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError as e:
        raise UserError(f"cannot write --output {path}: {e.strerror}") from None


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

    started = time.perf_counter()
    check_output(args)
    prompts = read_prompts(args)
    settings_from(args, {}).validate()  # refuse bad flags before loading anything
    model, tokenizer, _ = load_model_with_adapter(args.workdir, args.adapter, args.checkpoint, quantize=args.quantize)
    generator = Generator(model, tokenizer)
    settings = settings_from(args, tokenizer.special_ids)
    ids = [generator.encode(p, where=f"prompt {n}" if len(prompts) > 1 else "the prompt")
           for n, p in enumerate(prompts, 1)]
    if not args.output and len(prompts) == 1 and settings.strategy != "beam" and settings.num_samples == 1:
        pieces = generator.stream(ids[0], settings)
        first = next(pieces, "")  # a refused prompt ends here, before anything is printed
        first_seconds = time.perf_counter() - started
        sys.stdout.write(prompts[0] + first)
        sys.stdout.flush()
        for piece in pieces:
            sys.stdout.write(piece)
            sys.stdout.flush()
        sys.stdout.write("\n")
        if args.verbose:
            print(f"time to first token {first_seconds:.2f} s, in all {time.perf_counter() - started:.2f} s "
                  "(since the command started)", file=sys.stderr)
        return
    results = generator.generate(ids, settings)
    if args.output:
        write_records(args.output, [json.dumps(record(prompt, i, c), ensure_ascii=False) + "\n"
                                    for prompt, completions in zip(prompts, results) for i, c in enumerate(completions)])
        return
    for n, (prompt, completions) in enumerate(zip(prompts, results), 1):
        for i, c in enumerate(completions, 1):
            score = f", score {c.score:.3f}" if c.score is not None else ""
            print(f"=== prompt {n}, sample {i} ({c.finish_reason}{score})\n{prompt}{c.text}\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    guarded(lambda: run(args), compile_cache=not args.no_compile_cache, writes_nothing=argv is None)


if __name__ == "__main__":
    main()
