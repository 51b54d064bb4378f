"""A conversation with one model: its history, persona and sampling settings.

The history is re-rendered through the chat template each turn, dropping the oldest turns
to leave room for the reply; the reply streams as it is decoded and ends at the end of the
assistant's turn. `python -m gptjax.chat` is the terminal front end.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Iterator

from gptjax.errors import UserError
from gptjax.data.chat_template import ChatTemplate, Turn
from gptjax.generate.generator import Generator
from gptjax.generate.settings import GenerationSettings


class ChatSession:
    """A conversation with one model: its history, persona and sampling settings."""

    def __init__(self, generator: Generator, settings: GenerationSettings, persona: str = "",
                 template: ChatTemplate | None = None):
        """template: the one the model was trained with (`trained_template`); default: the
        template its tokenizer allows."""
        self.generator = generator
        self.template = template if template is not None else ChatTemplate(generator.tokenizer)
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

    def set_temperature(self, value: float) -> None:
        """Sample later replies at `value`; a value the settings refuse leaves them as they were."""
        changed = dataclasses.replace(self.settings, temperature=value)
        changed.checked(self.generator.cfg.vocab_size, self.generator.block_size)
        self.settings = changed

    def save(self, path: str) -> None:
        record = {"persona": self.persona, "turns": [dataclasses.asdict(t) for t in self.turns]}
        try:
            with open(path, "w", encoding="utf-8") as f:
                json.dump(record, f, ensure_ascii=False, indent=1)
        except OSError as e:
            raise UserError(f"cannot save the conversation to {path}: {e.strerror}; pick a writable path")
