"""Chat with a trained model in the terminal: `python -m gptjax.chat --workdir runs/x`.

The conversation itself is `gptjax.generate.chat_session.ChatSession`; this reads messages
and commands: /reset, /persona TEXT, /temperature X, /save PATH, /quit.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TextIO

from gptjax.cli import guarded
from gptjax.errors import UserError
from gptjax.generate.chat_session import ChatSession
from gptjax.generate.generator import Generator
from gptjax.generate.settings import GenerationSettings

HELP = "commands: /reset, /persona TEXT, /temperature X, /save PATH, /quit"
EXAMPLE = """example:
  python -m gptjax.chat --workdir runs/sft --persona "You are a helpful assistant." --temperature 0.7"""


def command(session: ChatSession, line: str, out: TextIO) -> bool:
    """Carry out a /command; False when the chat should end."""
    name, _, arg = line[1:].partition(" ")
    arg = arg.strip()
    if name in ("quit", "exit"):
        return False
    if name == "reset":
        session.turns = []
        out.write("(history cleared)\n")
    elif name == "persona":
        session.persona = arg
        out.write(f"(persona {'set' if arg else 'removed'})\n")
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


def repl(session: ChatSession, stdin: TextIO, out: TextIO, verbose: bool = False) -> None:
    """Read messages and commands line by line until /quit or end of input."""
    out.write(f"chatting; {HELP}\n")
    try:
        converse(session, stdin, out, verbose)
    except KeyboardInterrupt:
        out.write("\n")


def converse(session: ChatSession, stdin: TextIO, out: TextIO, verbose: bool = False) -> None:
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
                if not command(session, line, out):
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
    p.add_argument("--persona", default="", help="system message that sets who the assistant is")
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
        from gptjax.workdir import load_model

        model, tokenizer, _ = load_model(args.workdir)
        settings = GenerationSettings(strategy="sample", temperature=args.temperature, top_k=args.top_k,
                                      top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed)
        repl(ChatSession(Generator(model, tokenizer), settings, args.persona), sys.stdin, sys.stdout, args.verbose)

    guarded(run, compile_cache=not args.no_compile_cache, writes_nothing=argv is None)


if __name__ == "__main__":
    main()
