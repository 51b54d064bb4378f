"""Chat with a trained model in the terminal: `python -m gptjax.chat --workdir runs/x`.

The conversation itself is `gptjax.generate.chat_session.ChatSession`; this reads messages
and commands: /reset, /persona TEXT, /temperature X, /save PATH, /quit. Prompts are rendered
with the template the model was trained with (the workdir's chat.json). `/persona NAME` (and
`--persona NAME`) attaches the LoRA adapter of that name when the workdir has one under
adapters/, over the base loaded once; a character of the plays (`--persona HAMLET`) becomes
the system text the persona fine-tuning used ("You are HAMLET, in *Hamlet*."); any other
persona is the system text as written.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from typing import TextIO

from gptjax.cli import guarded
from gptjax.errors import UserError
from gptjax.generate.chat_session import ChatSession
from gptjax.generate.generator import Generator
from gptjax.generate.settings import GenerationSettings
from gptjax.model.adapted import AdapterSet, servable

HELP = "commands: /reset, /persona TEXT or ADAPTER, /temperature X, /save PATH, /quit"
EXAMPLE = """example:
  python -m gptjax.chat --workdir runs/sft --persona "You are a helpful assistant." --temperature 0.7"""


class Personas:
    """What `/persona NAME` can switch to: the adapters saved over the one base model loaded."""

    def __init__(self, adapters: AdapterSet | None = None, quantize: str = "none"):
        self.adapters, self.quantize = adapters, quantize

    def apply(self, session: ChatSession, name: str) -> str:
        """Attach the adapter `name` if there is one (the base is not reloaded), else set the system text."""
        if self.adapters is not None and name in self.adapters.known:
            model = servable(self.adapters.switch(name), self.quantize)
            session.generator = Generator(model, session.generator.tokenizer)
            return f"(adapter {name} attached)"
        session.persona = system_text(name)
        return f"(persona {'set' if name else 'removed'})"


def command(session: ChatSession, line: str, out: TextIO, personas: Personas | None = None) -> bool:
    """Carry out a /command; False when the chat should end."""
    name, _, arg = line[1:].partition(" ")
    arg = arg.strip()
    if name in ("quit", "exit"):
        return False
    if name == "reset":
        session.turns = []
        out.write("(history cleared)\n")
    elif name == "persona":
        out.write((personas or Personas()).apply(session, arg) + "\n")
    elif name == "temperature":
        try:
            value = float(arg)
        except ValueError:
            raise UserError(f"/temperature needs a number, got {arg!r}; e.g. /temperature 0.7") from None
        session.set_temperature(value)
        out.write(f"(temperature {value})\n")
    elif name == "save":
        if not arg:
            raise UserError("/save needs a path, e.g. /save chat.json")
        session.save(arg)
        out.write(f"(saved to {arg})\n")
    else:
        raise UserError(f"/{name} is not a command; {HELP}")
    return True


def system_text(persona: str) -> str:
    """The system text of a persona: a character of the plays as in training, else as written."""
    words = persona.split()
    if not words or len(words) > 4 or any(ch in persona for ch in ".,;:!?*"):
        return persona
    from gptjax.data.dialogues import character_persona

    return character_persona(persona.strip(), the_plays()) or persona


@functools.cache
def the_plays():
    from gptjax.data.dialogues import parsed_plays

    return parsed_plays()


def repl(session: ChatSession, stdin: TextIO, out: TextIO, personas: Personas | None = None,
         verbose: bool = False) -> None:
    """Read messages and commands line by line until /quit or end of input."""
    out.write(f"chatting; {HELP}\n")
    try:
        converse(session, stdin, out, personas, verbose)
    except KeyboardInterrupt:
        out.write("\n")


def converse(session: ChatSession, stdin: TextIO, out: TextIO, personas: Personas | None = None,
             verbose: bool = False) -> None:
    while True:
        out.write("you> ")
        out.flush()
        line = stdin.readline()
        if not line:
            out.write("\n")
            return
        line = line.rstrip("\n")
        if not line.strip():
            continue
        try:
            if line.startswith("/"):
                if not command(session, line, out, personas):
                    return
                continue
            asked = time.perf_counter()
            pieces = session.reply(line)
            out.write("bot> ")
            first = None
            for piece in pieces:
                first = time.perf_counter() - asked if first is None else first
                out.write(piece)
                out.flush()
            out.write("\n")
            if verbose and first is not None:
                out.write(f"(first token after {first:.2f} s)\n")
        except UserError as e:
            out.write(f"error: {e}\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gptjax.chat", description="Chat with a trained model.",
                                epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workdir", required=True, help="directory of a trained model")
    p.add_argument("--persona", default="", help="who the assistant is: the name of an adapter in "
                   "WORKDIR/adapters/, a character of the plays (e.g. HAMLET), or a system message")
    p.add_argument("--adapter", default="", help="LoRA adapter to start with: a name in WORKDIR/adapters/ or its "
                   "directory")
    p.add_argument("--quantize", default="none", help="none or int8 (weight-only, per-channel scales)")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--max_new_tokens", type=int, default=200, help="longest reply, in tokens")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true", help="print the time to each reply's first token")
    p.add_argument("--no_compile_cache", action="store_true", help="do not keep compiled programs across runs")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def run() -> None:
        from gptjax.data.chat_template import trained_template
        from gptjax.model.adapted import check_quantize
        from gptjax.workdir import adapters_dir, load_model

        check_quantize(args.quantize)
        model, tokenizer, _ = load_model(args.workdir)
        adapters = AdapterSet(model, adapters_dir(args.workdir))
        if args.adapter:
            adapters.switch(args.adapter)
        settings = GenerationSettings(strategy="sample", temperature=args.temperature, top_k=args.top_k,
                                      top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed)
        session = ChatSession(Generator(servable(model, args.quantize), tokenizer), settings, "",
                              trained_template(args.workdir, tokenizer))
        personas = Personas(adapters, args.quantize)
        if args.persona:
            print(personas.apply(session, args.persona))
        repl(session, sys.stdin, sys.stdout, personas, args.verbose)

    guarded(run, compile_cache=not args.no_compile_cache, writes_nothing=argv is None)


if __name__ == "__main__":
    main()
