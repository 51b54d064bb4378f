"""A fine-tuned chat model against its base on held-out conversations (configs/persona.py).

    python -m experiments.persona_eval --base runs/persona_base --sft runs/persona \\
        --out runs/persona/persona_eval.json

Measures, for the base (prompted with the same template) and the fine-tuned model:
1. bits per char of the assistant tokens of the held-out conversations (`--split`);
2. persona fidelity: replies sampled to held-out prompts, asked of judged training characters,
   attributed by the character classifier (eval/persona.py); with the right persona, with a
   wrong one (the control), and chance;
3. BLEU and chrF of greedy and beam replies against the real replies, distinct-1/2 and 4-gram
   repetition.
What is compared and why: gptjax/eval/persona_study.py. The study over seeds trains base and
fine-tuned model per seed (--config.seed=S in both commands of configs/persona.py) and runs
this once per pair; `--prompts` and `--score` bound the work for a quick check.
"""

from __future__ import annotations

import argparse
import json
import sys

from gptjax.cli import guarded


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m experiments.persona_eval", description=__doc__.split("\n")[0])
    p.add_argument("--base", required=True, help="workdir of the base model")
    p.add_argument("--sft", required=True, help="workdir of the fine-tuned model")
    p.add_argument("--lora", default="", help="workdir of a LoRA run on the same base and data, measured too")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--score", type=int, default=0, help="conversations scored for bits per char (0: all)")
    p.add_argument("--prompts", type=int, default=200, help="held-out prompts replied to")
    p.add_argument("--max_new_tokens", type=int, default=64)
    p.add_argument("--beams", type=int, default=4)
    p.add_argument("--characters", type=int, default=20, help="most talkative training characters judged")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="write the figures as JSON here")
    return p.parse_args(argv)


def measure(args: argparse.Namespace) -> dict:
    from gptjax.data.chat_template import ChatTemplate, trained_template
    from gptjax.data.dialogues import parsed_plays
    from gptjax.errors import UserError
    from gptjax.eval import persona, persona_study as study
    from gptjax.generate.generator import Generator
    from gptjax.generate.settings import GenerationSettings
    from gptjax.workdir import load_model

    sft_model, sft_tok, config = load_model(args.sft)
    sft_template = trained_template(args.sft, sft_tok)
    base_model, base_tok, _ = load_model(args.base)
    models = {"base": (base_model, ChatTemplate(base_tok, role_tokens=sft_template.role_tokens)),
              "sft": (sft_model, sft_template)}
    if args.lora:
        lora_model, lora_tok, _ = load_model(args.lora)
        models["lora"] = (lora_model, trained_template(args.lora, lora_tok))
    if config.data.source != "dialogues":
        raise UserError(f"{args.sft} was not fine-tuned on the plays' dialogues (data.source="
                        f"{config.data.source}); persona fidelity needs them")
    splits = study.split_conversations(config.data, config.seed)
    held_out = splits[args.split]
    train_plays = {c.group for c in splits["train"]}
    speeches = persona.character_speeches([p for p in parsed_plays() if p.name in train_plays])
    judge = persona.PersonaClassifier.train(speeches, top_n=args.characters)
    scored = held_out[:args.score] if args.score else held_out
    asked = held_out[:args.prompts]
    fp = study.fidelity_prompts(judge, asked, args.seed)
    prompts, references = zip(*(study.first_exchange(c) for c in asked))
    sample = GenerationSettings(strategy="sample", temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens,
                                seed=args.seed)
    decoders = {"greedy": GenerationSettings(strategy="greedy", max_new_tokens=args.max_new_tokens),
                "beam": GenerationSettings(strategy="beam", beams=args.beams, max_new_tokens=args.max_new_tokens)}
    out: dict = {"split": args.split, "scored_conversations": len(scored), "prompts": len(asked),
                 "judged_characters": len(judge.labels)}
    for name, (model, template) in models.items():
        generator = Generator(model, template.tokenizer)
        block = model.cfg.block_size
        figures = {"assistant": study.assistant_bpc(model, template, scored, block),
                   "fidelity": study.fidelity(generator, template, judge, fp, sample)}
        for decoder, settings in decoders.items():
            figures[decoder] = study.overlap(study.replies(generator, template, prompts, settings), references)
        out[name] = figures
        print(report_lines(name, figures), flush=True)
    return out


def report_lines(name: str, f: dict) -> str:
    a, right, wrong = f["assistant"], f["fidelity"]["right"], f["fidelity"]["wrong"]
    lines = [f"{name}: assistant tokens {a['bits_per_char']:.3f} bits/char ({a['tokens']} tokens); "
             f"fidelity {right['rate']:.3f} right persona, {wrong['rate']:.3f} wrong persona, chance "
             f"{right['chance']:.3f} ({right['chance_given_predictions']:.3f} given the judge's preferences, "
             f"n={right['n']})"]
    for decoder in ("greedy", "beam"):
        o = f[decoder]
        lines.append(f"  {decoder}: BLEU {o['bleu']:.2f}, chrF {o['chrf']:.2f}, distinct-1 {o['distinct_1']:.3f}, "
                     f"distinct-2 {o['distinct_2']:.3f}, repetition {o['repetition']:.3f}, "
                     f"{o['mean_words']:.1f} words")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def run() -> None:
        figures = measure(args)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(figures, f, indent=1)
            print(f"figures in {args.out}")

    guarded(run)


if __name__ == "__main__":
    main()
