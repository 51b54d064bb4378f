"""Chat with a trained model in the terminal: `python -m gptjax.chat --workdir runs/x`.

The history is re-rendered through the chat template each turn, dropping the oldest turns
to leave room for the reply; the reply streams as it is decoded and ends at the end of the
assistant's turn. Commands: /reset, /persona TEXT, /temperature X, /save PATH, /quit.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Iterator, TextIO

from gptjax.cli import guarded
from gptjax.errors import UserError
from gptjax.data.chat_template import ChatTemplate, Turn
from gptjax.generate.generator import Generator
from gptjax.generate.settings import GenerationSettings

HELP = "commands: /reset, /persona TEXT, /temperature X, /save PATH, /quit"


class ChatSession:
    """A conversation with one model: its history, persona and sampling settings."""

    def __init__(self, generator: Generator, settings: GenerationSettings, persona: str = ""):
        self.generator = generator
        self.template = ChatTemplate(generator.tokenizer)
        self.settings = dataclasses.replace(settings, stop_tokens=self.template.stop_tokens,
                                            stop_strings=self.template.stop_strings, overflow="sliding")
        self.settings.checked(generator.cfg.vocab_size, generator.block_size)
        self.persona = persona
        self.turns: list[Turn] = []

    def conversation(self) -> list[Turn]:
        return ([Turn("system", self.persona)] if self.persona else []) + self.turns

    def reply(self, text: str) -> Iterator[str]:
        """The assistant's answer to `text` as a stream; both turns join the history at its end.

        A message the model cannot read is refused here, before anything streams.
        """
        self.generator.encode(text, where="your message")
        room = min(self.settings.max_new_tokens, self.generator.block_size // 2)
        turns = self.template.fit(self.conversation() + [Turn("user", text)], self.generator.block_size - room)
        prompt, _ = self.template.render(turns, open_reply=True)
        settings = dataclasses.replace(self.settings, seed=self.settings.seed + len(self.turns))
        return self.answer(text, self.generator.stream(prompt, settings))

    def answer(self, text: str, stream: Iterator[str]) -> Iterator[str]:
        answer = ""
        for piece in stream:
            shown = piece.lstrip(" ") if not answer and not self.template.role_tokens else piece
            answer += shown
            yield shown
        self.turns += [Turn("user", text), Turn("assistant", answer.strip())]

    def save(self, path: str) -> None:
        record = {"persona": self.persona, "turns": [dataclasses.asdict(t) for t in self.turns]}
        try:
            with open(path, "w", encoding="utf-8") as f:
                json.dump(record, f, ensure_ascii=False, indent=1)
        except OSError as e:
            raise UserError(f"cannot save the conversation to {path}: {e.strerror}; pick a writable path")


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
        changed = dataclasses.replace(session.settings, temperature=value)
        changed.checked(session.generator.cfg.vocab_size, session.generator.block_size)
        session.settings = changed
        out.write(f"(temperature {value})\n")
    elif name == "save":
        if not arg:
            raise UserError("/save needs a path, e.g. /save chat.json")
        session.save(arg)
        out.write(f"(saved to {arg})\n")
    else:
        raise UserError(f"/{name} is not a command; {HELP}")
    return True


def repl(session: ChatSession, stdin: TextIO, out: TextIO) -> None:
    """Read messages and commands line by line until /quit or end of input."""
    out.write(f"chatting; {HELP}\n")
    try:
        converse(session, stdin, out)
    except KeyboardInterrupt:
        out.write("\n")


def converse(session: ChatSession, stdin: TextIO, out: TextIO) -> None:
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
            pieces = session.reply(line)
            out.write("bot> ")
            for piece in pieces:
                out.write(piece)
                out.flush()
            out.write("\n")
        except UserError as e:
            out.write(f"error: {e}\n")


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m gptjax.chat", description="Chat with a trained model.")
    p.add_argument("--workdir", required=True, help="directory of a trained model")
    p.add_argument("--persona", default="", help="system message that sets who the assistant is")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top_k", type=int, default=0)
    p.add_argument("--top_p", type=float, default=0.95)
    p.add_argument("--max_new_tokens", type=int, default=200, help="longest reply, in tokens")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(sys.argv[1:] if argv is None else argv)

    def run() -> None:
        from gptjax.workdir import load_model

        model, tokenizer, _ = load_model(args.workdir)
        settings = GenerationSettings(strategy="sample", temperature=args.temperature, top_k=args.top_k,
                                      top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed)
        repl(ChatSession(Generator(model, tokenizer), settings, args.persona), sys.stdin, sys.stdout)

    guarded(run)


if __name__ == "__main__":
    main()
